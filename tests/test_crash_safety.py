"""Crash safety: SIGKILL at random points resumes to the uninterrupted run's exact result, an
unreadable latest checkpoint falls back to the one before it, non-chief workers never write the
work directory, and a non-finite loss stops the run without a poisoned checkpoint."""

import glob
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.experiments import get_config
from tf_skiprec.errors import TrainingError
from tf_skiprec.training import run
from tf_skiprec.training.state import Checkpoints, RunState, checkpoint_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["train.epochs=3", "train.checkpoint_every_steps=2", "runtime.progress=false"]


def _config(*overrides: str):
  config = get_config("smoke")
  for o in OVERRIDES + list(overrides):
    config.override(o)
  return config


def _metrics(result: dict) -> dict:
  """What must not depend on interruptions: the metrics and the step count (not timings)."""
  return {k: result[k] for k in ("valid", "test", "valid_by_kind", "test_by_kind", "steps",
                                 "best_epoch", "epochs_run")}


def _latest_named(workdir: str) -> str:
  """The checkpoint the state file names as the latest ("" if none yet)."""
  try:
    with open(os.path.join(workdir, "checkpoints", "checkpoint")) as f:
      return f.readline()
  except FileNotFoundError:
    return ""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(metrics, final weights) of the run never interrupted."""
  workdir = str(tmp_path_factory.mktemp("whole") / "w")
  return _metrics(run(_config(), workdir)), _model_weights(workdir)


def test_sigkill_at_random_points_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
  """Killed three times at random moments (saves included: a checkpoint every 2 steps), then
  run to the end: the same metrics, to the last digit, as a run never interrupted. Exact
  because the pretrain step has no randomness of its own (no dropout, full softmax), the
  shuffle order is a function of (seed, epoch), and the checkpoint holds the optimiser state and
  the position in the epoch."""
  workdir = str(tmp_path / "w")
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--experiment=smoke",
         f"--workdir={workdir}"] + [f"--override={o}" for o in OVERRIDES]
  seed = int(time.time())
  rng = random.Random(seed)
  kills = []
  while len(kills) < 3:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = _latest_named(workdir)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _latest_named(workdir) == before:
      time.sleep(0.05)  # training has started (TensorFlow's start-up is not what we test)
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:  # finished before the kill: start again from scratch
      assert proc.returncode == 0, (seed, proc.stderr.read()[-3000:])
      kills.clear()
      workdir = str(tmp_path / f"w{rng.randrange(10**9)}")
      cmd[3] = f"--workdir={workdir}"
      continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(_latest_named(workdir).strip())
  result = run(_config(), workdir)
  assert result["resumed_from_step"] > 0, (seed, kills)
  assert (_metrics(result), _model_weights(workdir)) == uninterrupted, (seed, kills)


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog,
                                                                        uninterrupted,
                                                                        monkeypatch):
  monkeypatch.chdir(tmp_path)
  workdir = "w"  # relative, as in the README's commands
  run(_config("train.epochs=1"), workdir)  # checkpoints at steps 2, 4, 6 and 7 (kept: 4, 6, 7)
  paths = checkpoint_paths(os.path.join(workdir, "checkpoints"))
  assert [p.rsplit("-", 1)[1] for p in paths] == ["7", "6", "4"]
  data = glob.glob(paths[0] + ".data-*")[0]
  with open(data, "r+b") as f:  # a torn write: the second half of the data file is garbage
    f.seek(os.path.getsize(data) // 2)
    f.write(os.urandom(os.path.getsize(data) - os.path.getsize(data) // 2))
  with caplog.at_level(logging.WARNING):
    result = run(_config(), workdir)
  assert result["resumed_from_step"] == 6
  assert any("ckpt-7 cannot be read" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  assert (_metrics(result), _model_weights(workdir)) == uninterrupted  # step 7 recomputed


def test_an_unreadable_checkpoint_state_file_still_resumes_from_the_newest_files(tmp_path, caplog):
  workdir = str(tmp_path / "w")
  run(_config("train.epochs=1"), workdir)
  with open(os.path.join(workdir, "checkpoints", "checkpoint"), "w") as f:
    f.write("model_checkpoint_path: \x00garbage{")  # TensorFlow alone would start again from 0
  with caplog.at_level(logging.WARNING):
    result = run(_config("train.epochs=2"), workdir, continue_finished=True)
  assert result["resumed_from_step"] == 7 and result["steps"] == 14
  assert any("cannot be read; using the checkpoint files" in r.getMessage()
             for r in caplog.records)


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
  workdir = str(tmp_path / "w")
  run(_config("train.epochs=1", "train.checkpoint_every_steps=0", "train.max_checkpoints=1"),
      workdir)
  for index in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")):
    with open(index, "wb") as f:
      f.write(b"not a checkpoint index")
  with pytest.raises(TrainingError, match="none of the checkpoints .* can be read.*Fix"):
    run(_config("train.epochs=2"), workdir)


def test_a_non_chief_worker_saves_only_to_its_scratch_directory_and_restores_from_the_chiefs(
    tmp_path):
  def make(scratch=None):
    model = tf.Module()
    model.w = tf.Variable(np.arange(4, dtype=np.float32))
    state = RunState()
    return model, state, Checkpoints(str(tmp_path / "w"), model=model, optimizers={},
                                     state=state, scratch=scratch)

  model, state, chief = make()
  state.step.assign(5)
  chief.save_latest()
  chief.save_best()
  before = sorted(os.listdir(tmp_path / "w" / "checkpoints"))
  scratch = str(tmp_path / "w" / ".worker_worker_1")
  other_model, other_state, other = make(scratch)
  assert other.restore_latest() == 5  # from the chief's checkpoints
  np.testing.assert_array_equal(other_model.w.numpy(), np.arange(4))
  other_state.step.assign(9)
  other_model.w.assign(np.full(4, -1.0, np.float32))
  other.save_latest()
  other.save_best()
  assert not os.path.exists(scratch)
  assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == before
  assert checkpoint_paths(str(tmp_path / "w" / "best"))[0].endswith("ckpt-5")


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_saves_nothing_after_it(tmp_path):
  """Adam at a learning rate of 1e30 sends the weights to ~1e30 in one step; the next forward
  pass overflows. A checkpoint is due after every step, so a poisoned one would be written if
  the check came after the save."""
  workdir = str(tmp_path / "w")
  config = _config("train.learning_rate=1e30", "train.checkpoint_every_steps=1")
  with pytest.raises(TrainingError) as info:
    run(config, workdir)
  message = str(info.value)
  step = int(message.split("step ")[1].split()[0])
  assert "loss is nan" in message or "loss is inf" in message, message
  assert "Fix:" in message and "learning_rate" in message
  paths = checkpoint_paths(os.path.join(workdir, "checkpoints"))
  assert paths and paths[0].endswith(f"ckpt-{step - 1}"), (paths, step)
  assert all(os.path.basename(p) in message for p in paths), message  # where to resume from
  for path in paths:
    reader = tf.train.load_checkpoint(path)
    for name, dtype in reader.get_variable_to_dtype_map().items():
      if dtype.is_floating:
        assert np.all(np.isfinite(reader.get_tensor(name))), (path, name)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["learning_rate"] == 1e30


def test_a_gumbel_run_resumed_mid_epoch_draws_the_same_decisions_as_an_uninterrupted_one(
    tmp_path):
  """SkipRec's straight-through Gumbel samples come from a stateless seed (train.seed, step), so
  a run resumed at step 6 draws what the uninterrupted run drew there. (TensorFlow's stateful
  generator would start its stream again at the restart.)"""
  gumbel = ("train.mode=gumbel", "train.pretrain_epochs=1", "policy.tau_anneal_steps=20")
  whole = run(_config("train.epochs=2", *gumbel), str(tmp_path / "whole"))
  workdir = str(tmp_path / "resumed")
  run(_config("train.epochs=1", *gumbel), workdir)
  latest = checkpoint_paths(os.path.join(workdir, "checkpoints"))[0]
  assert latest.endswith("ckpt-7")
  for path in glob.glob(latest + ".*"):  # as if killed after step 6's checkpoint
    os.remove(path)
  resumed = run(_config("train.epochs=2", *gumbel), workdir)
  assert resumed["resumed_from_step"] == 6
  assert _metrics(resumed) == _metrics(whole)
  assert resumed["valid_blocks"] == whole["valid_blocks"]
  # Ranking metrics could hide small differences; the weights cannot.
  assert _model_weights(str(tmp_path / "whole")) == _model_weights(workdir)


def _model_weights(workdir: str) -> dict:
  """{name: bytes} of every model variable in the latest checkpoint of `workdir`."""
  reader = tf.train.load_checkpoint(checkpoint_paths(os.path.join(workdir, "checkpoints"))[0])
  return {name: reader.get_tensor(name).tobytes() for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


EXPORT_LOOP = """
import sys
sys.path.insert(0, sys.argv[2])
import conftest
import tensorflow as tf
from tf_skiprec.export.exporter import export_model
tf.keras.utils.set_random_seed(0)  # the same model in every process
model, id_map = conftest.tiny_skiprec(40, 4, 12)
while True:  # export after export until killed
  export_model(model, id_map, threshold=0.5, base_dir=sys.argv[1], model_name="m", max_len=12,
               sample_histories=conftest.histories(40, 4, 12), top_k=5)
  print("exported", flush=True)
"""


def test_exports_killed_at_random_points_leave_only_complete_versions(tmp_path):
  """An export is staged in a hidden folder and renamed to its version number when complete and
  checked: whatever the moment of a SIGKILL, every version folder loads and answers."""
  from tf_skiprec.export.runner import SavedModelRunner
  rng = random.Random(int(time.time()))
  base = str(tmp_path / "models")
  for _ in range(3):
    proc = subprocess.Popen([sys.executable, "-c", EXPORT_LOOP, base, os.path.dirname(__file__)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "exported", proc.stderr.read()[-3000:]
    time.sleep(rng.uniform(0.0, 3.0))  # somewhere in a later export
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  names = os.listdir(os.path.join(base, "m"))
  versions = sorted(int(n) for n in names if n.isdigit())
  assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3, names
  assert all(n.isdigit() or n.startswith(".") for n in names), names  # leftovers are hidden
  history = np.array([[""] * 9 + ["item1", "item2", "item3"]], dtype=object).astype(bytes)
  answers = []
  for version in versions:  # the same model each time: the same answer from each
    runner = SavedModelRunner(os.path.join(base, "m", str(version)))
    try:
      out = runner.run({"history": history}, "serving_default")
    finally:
      runner.close()
    assert out["item_ids"].shape == (1, 5), version
    answers.append((out["item_ids"].tolist(), out["scores"].round(5).tolist()))
  assert all(answer == answers[0] for answer in answers), answers
