import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tf_skiprec.experiments import get_config
from tf_skiprec.errors import ConfigError, DataError
from tf_skiprec.training import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _latest_step(workdir):
  path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  return None if path is None else int(tf.train.load_variable(path, "state/step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_smoke_run_leaves_a_complete_workdir_and_rerun_does_not_retrain(tmp_path):
  workdir = str(tmp_path / "w")
  result = run(get_config("smoke"), workdir)
  for name in ("config.json", "id_map.json", "metrics.json", "checkpoints/id_map.json",
               "best/id_map.json", "checkpoints/checkpoint", "best/checkpoint"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["num_blocks"] == 4
  assert set(result["test"]) >= {"HR@5", "NDCG@10", "MRR@20"}
  assert set(result["test_by_kind"]) == {"shallow", "deep"}
  assert result["steps"] == _latest_step(workdir) > 0
  again = run(get_config("smoke"), workdir)
  assert again["steps"] == result["steps"] and again["resumed_from_step"] == result["steps"]
  assert again["test"] == result["test"]


def test_a_finished_run_trains_on_only_when_asked_to_continue(tmp_path):
  """What a Hyperband round does with the previous round's work directory."""
  config = get_config("smoke")
  config.train.epochs = 1
  first = run(config, str(tmp_path / "w"))
  config.train.epochs = 2
  again = run(config, str(tmp_path / "w"))                      # not asked: evaluated again
  assert again["epochs_run"] == 1 and again["test"] == first["test"]
  config.train.patience = 0  # counts as stopped early: not reopened, even when asked
  assert run(config, str(tmp_path / "w"), continue_finished=True)["epochs_run"] == 1
  config.train.patience = 5
  more = run(config, str(tmp_path / "w"), continue_finished=True)
  assert first["epochs_run"] == 1 and more["epochs_run"] == 2
  assert more["steps"] == 2 * first["steps"] and more["resumed_from_step"] == first["steps"]


def test_the_cli_refuses_a_bad_enum_before_any_work_and_the_corrected_command_runs(tmp_path):
  workdir = tmp_path / "w"
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--experiment=smoke",
         f"--workdir={workdir}"]
  out = subprocess.run(cmd + ["--override=policy.tau_schedule=bogus"], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert ("policy.tau_schedule = 'bogus': not a valid value; valid values: 'exponential', "
          "'linear', 'constant'. Fix: --override policy.tau_schedule=exponential") in out.stderr
  assert "Data:" not in out.stderr and "epoch" not in out.stderr  # nothing loaded or trained
  assert not workdir.exists()
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads((workdir / "metrics.json").read_text())["steps"] == 14


def test_a_run_that_fails_before_its_first_step_leaves_the_work_directory_unclaimed(tmp_path):
  """A malformed log passes validation (the file exists) and fails as it is read: the work
  directory gets no config.json, so the corrected data runs there (not refused as "a different
  data config")."""
  data = tmp_path / "log.inter"
  data.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tnot-a-time\n")
  config = get_config("smoke").override(f"data.dataset=recbole:{data}")
  workdir = tmp_path / "w"
  with pytest.raises(DataError, match="log.inter:2"):
    run(config, str(workdir))
  assert not (workdir / "config.json").exists()
  rows = [f"u{u}\ti{(u * 7 + t) % 30}\t{t}" for u in range(40) for t in range(12)]
  data.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
  config.train.epochs = 1
  assert run(config, str(workdir))["steps"] > 0
  assert json.loads((workdir / "config.json").read_text())["data"]["dataset"] == f"recbole:{data}"


def test_killed_run_resumes_from_its_checkpoint_with_the_step_counter_continuing(tmp_path):
  workdir = str(tmp_path / "w")
  overrides = ["train.epochs=40", "train.patience=100", "train.checkpoint_every_steps=3"]
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--experiment=smoke",
         f"--workdir={workdir}"] + [f"--override={o}" for o in overrides]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and (_latest_step(workdir) or 0) < 9:
      time.sleep(0.2)
    assert (_latest_step(workdir) or 0) >= 9, "the training subprocess never checkpointed"
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  killed_at = _latest_step(workdir)
  config = get_config("smoke")
  for o in overrides:
    config.override(o)
  config.train.epochs = 3  # finish sooner; the step counter must carry on from `killed_at`
  result = run(config, workdir)
  assert result["resumed_from_step"] == killed_at
  steps_per_epoch = 7  # 214 training windows / batch 32
  assert result["steps"] == max(3 * steps_per_epoch, killed_at)
  assert result["steps"] >= killed_at


def test_resuming_with_a_different_model_is_refused(tmp_path):
  workdir = str(tmp_path / "w")
  config = get_config("smoke")
  config.train.epochs = 1
  run(config, workdir)
  config.model.num_blocks = 6
  with pytest.raises(ConfigError, match=r"different model config \(fields \['num_blocks'\]\)"):
    run(config, workdir)


@pytest.mark.parametrize("args, message", [
    (["--dataset=recbole:/nonexistent/ml"], "/nonexistent/ml does not exist"),
    (["--dataset=parquet:/x"], "parquet"),
    (["--override", "model.depth=3"], "model has no field 'depth'"),
    (["--experiment=nope"], "'nope' is not registered"),
    (["--override", "train.epochs=1", "train.patience=2"],
     "unexpected argument(s) 'train.patience=2'"),
])
def test_cli_reports_bad_input_without_a_traceback(tmp_path, args, message):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                        f"--workdir={tmp_path / 'w'}"] + args, capture_output=True, text=True)
  assert out.returncode == 2
  assert message in out.stderr
  assert "Traceback" not in out.stderr


def _one_epoch_smoke_run(tmp_path):
  """A finished 1-epoch smoke run: its config, work directory and config.json as written."""
  workdir = tmp_path / "w"
  config = get_config("smoke")
  config.train.epochs = 1
  run(config, str(workdir))
  return config, workdir, json.loads((workdir / "config.json").read_text())


def test_a_run_from_before_the_budget_counted_the_policy_resumes_only_as_it_was_trained(tmp_path):
  config, workdir, written = _one_epoch_smoke_run(tmp_path)
  del written["policy"]["budget_counts_policy"]  # as written before issue 15: a blocks' budget
  (workdir / "config.json").write_text(json.dumps(written))
  with pytest.raises(ConfigError, match=r"fields \['budget_counts_policy'\].*written before "
                                        r"policy.budget counted the policy network's own cost; "
                                        r"--override policy.budget_counts_policy=false resumes"):
    run(config, str(workdir))
  config.policy.budget_counts_policy = False
  assert run(config, str(workdir))["resumed_from_step"] > 0


def test_a_work_directory_from_before_a_new_config_field_still_resumes(tmp_path):
  config, workdir, written = _one_epoch_smoke_run(tmp_path)
  del written["policy"]["budget_slack"]        # as written before the field existed
  del written["data"]["synthetic"]["zipf_exponent"]
  (workdir / "config.json").write_text(json.dumps(written))
  assert run(config, str(workdir))["resumed_from_step"] > 0  # defaults match: resumes
  config.policy.budget_slack = 0.2                             # not the default: refused
  with pytest.raises(ConfigError, match=r"different policy config \(fields \['budget_slack'\]\)"):
    run(config, str(workdir))
  config.policy.budget_slack = 0.05
  written["policy"]["gone"] = 1                                # a field this version lacks
  (workdir / "config.json").write_text(json.dumps(written))
  with pytest.raises(ConfigError, match=r"different policy config \(fields \['gone'\]\)"):
    run(config, str(workdir))
