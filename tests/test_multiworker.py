"""MultiWorkerMirroredStrategy end to end: two `train.py --strategy=multiworker` processes with
TF_CONFIG on 127.0.0.1, as a user would start them on two machines."""

import json
import os
import socket
import subprocess
import sys

from tf_skiprec.experiments import get_config
from tf_skiprec.training import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--experiment=smoke", "--strategy=multiworker", "--override=runtime.progress=false",
          "--override=train.checkpoint_every_steps=3"]


def _free_ports(n: int) -> list[int]:
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _launch(workdir: str | list[str], extra: list[str], workers: int = 2,
            check: bool = True) -> list[tuple[int, str]]:
  """Runs one train.py per worker, all on `workdir` (or worker i on workdir[i]); returns their
  (pid, stdout), or with check=False their (return code, stderr)."""
  hosts = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
  procs = []
  for i in range(workers):
    workdir_i = workdir[i] if isinstance(workdir, list) else workdir
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir_i}", *COMMON,
         *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  try:
    outs = [(proc.pid, *proc.communicate(timeout=400)) for proc in procs]
  finally:
    for proc in procs:  # a failed or stuck worker must not leave the other one waiting
      proc.kill()
  if not check:
    return [(proc.returncode, err) for (_, _, err), proc in zip(outs, procs)]
  for (pid, out, err), proc in zip(outs, procs):
    assert proc.returncode == 0, err[-3000:]
  return [(pid, out) for pid, out, _ in outs]


def _row(stdout: str, split: str) -> list[str]:
  return next(line.split()[1:] for line in stdout.splitlines() if line.startswith(split + " "))


def test_two_workers_train_like_one_device_and_only_the_chief_writes(tmp_path):
  workdir = str(tmp_path / "run")
  (chief_pid, chief_out), (worker_pid, worker_out) = _launch(workdir, ["--override=train.epochs=2"])

  # Worker 0 is the chief and alone writes the work directory; the other worker's checkpoint
  # saves (collective) go to its scratch directory, deleted after each save.
  for name in ("config.json", "metrics.json", "id_map.json", "checkpoints", "best"):
    assert os.path.exists(os.path.join(workdir, name)), name
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert len(events) == 1 and f".{chief_pid}." in events[0], (events, chief_pid, worker_pid)
  assert not [n for n in os.listdir(workdir) if n.startswith(".worker")]
  with open(os.path.join(workdir, "metrics.json")) as f:
    chief = json.load(f)
  assert chief["steps"] == 14  # 2 epochs x 7 global batches of 32: the batch is split, not doubled
  # Both workers evaluated the same synchronised model.
  assert _row(chief_out, "valid") == _row(worker_out, "valid")
  assert _row(chief_out, "test") == _row(worker_out, "test")

  # One device, same global batch: equal up to float noise and each replica averaging over its
  # own positions (measured: 0.4104 one device, 0.4135 two workers, validation NDCG@10).
  config = get_config("smoke")
  config.runtime.progress = False
  config.train.checkpoint_every_steps = 3
  single = run(config, str(tmp_path / "single"))
  assert single["steps"] == 14
  for split in ("valid", "test"):
    assert abs(single[split]["NDCG@10"] - chief[split]["NDCG@10"]) < 0.02, split


def test_two_workers_resume_skiprec_from_the_chiefs_checkpoint_and_the_chief_exports(tmp_path):
  """SkipRec (pretrain stage, then Gumbel): the policy's batch-norm statistics are synchronised
  on read, a collective read that evaluation and export must make on every worker at once."""
  workdir, models = str(tmp_path / "run"), str(tmp_path / "models")
  skiprec = ["--override=train.mode=gumbel", "--override=train.pretrain_epochs=1"]
  _launch(workdir, skiprec + ["--override=train.epochs=1"])
  outs = _launch(workdir, skiprec + ["--override=train.epochs=2",  # both restore step 7
                                     "--continue_finished",
                                     f"--override=export.base_dir={models}"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    result = json.load(f)
  assert result["resumed_from_step"] == 7 and result["steps"] == 14
  assert "14 steps" in outs[1][1]  # the other worker resumed from the same step
  assert _row(outs[0][1], "valid") == _row(outs[1][1], "valid")
  assert not [n for n in os.listdir(workdir) if n.startswith(".worker")]
  # One export, by the chief, checked against the model (export_model refuses a mismatch).
  assert os.listdir(os.path.join(models, "skiprec")) == ["1"]
  assert result["export"]["version"] == 1


def test_workers_that_restore_different_checkpoints_stop_with_an_error(tmp_path):
  """A work directory that is not shared: the chief resumes at step 7, the other worker finds
  nothing. Both must stop at once with the reason (not train out of step, not hang)."""
  chief_dir = str(tmp_path / "chief")
  _launch(chief_dir, ["--override=train.epochs=1"])
  ended = _launch([chief_dir, str(tmp_path / "elsewhere")], ["--override=train.epochs=2"],
                  check=False)
  for code, err in ended:
    assert code == 2, err[-3000:]
    assert "the workers restored different checkpoints (" in err and "from 0 to 7" in err, err[-3000:]
    assert "same --workdir on a file system they all mount" in err
