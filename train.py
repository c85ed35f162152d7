"""Train, evaluate and export tf_skiprec models.

  python train.py --experiment=default --workdir=runs/default
  python train.py --experiment=ml100k_10 --dataset=recbole:../shared/data/ml-100k --workdir=runs/m10
  python train.py --experiment=smoke --workdir=/tmp/smoke --override model.num_blocks=2

absl flags -> config -> run(). Nothing else.
"""

import logging as std_logging
import sys

import tf_skiprec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from absl import app, flags, logging

from tf_skiprec.config import Config, get_config
from tf_skiprec.errors import ConfigError, DataError
from tf_skiprec.training import run
from tf_skiprec.training.report import result_table

FLAGS = flags.DEFINE_string("experiment", "default", "Named experiment (tf_skiprec/config.py).")
WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Work directory (resumes if it exists).")
DATASET = flags.DEFINE_string("dataset", None, "'synthetic' or FORMAT:PATH, e.g. "
                              "recbole:../shared/data/ml-100k (FORMAT: recbole|movielens|csv).")
CONFIG = flags.DEFINE_string("config", None, "A JSON config file (as written to workdir/config.json);"
                             " replaces --experiment.")
OVERRIDES = flags.DEFINE_multi_string("override", [], "key=value, e.g. model.num_blocks=32.")


def build_config() -> Config:
  config = Config.from_json_file(CONFIG.value) if CONFIG.value else get_config(FLAGS.value)
  if DATASET.value:
    config.data.dataset = DATASET.value
  for assignment in OVERRIDES.value:
    config.override(assignment)
  return config


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  # Our INFO lines, but not the INFO chatter of installed libraries (TF checkpoint sharding).
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or "site-packages" not in r.pathname)
  try:
    config = build_config()
    result = run(config, WORKDIR.value)
  except (ConfigError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print()
  print(result_table(result))
  print(f"\nbest epoch {result['best_epoch']}, {result['steps']} steps, "
        f"{result['train_seconds']:.1f} s training; work directory: {WORKDIR.value}")
  return 0


if __name__ == "__main__":
  app.run(main)
