"""Training: one `run(config, workdir) -> dict` for the CLI, the tests and the tuner."""

from tf_skiprec.training.run import run  # noqa: F401
