"""The Keras Tuner search: the space and its CLI, the objective, a real 2-trial search whose best
config retrains through train.py, resuming a killed search, and chief/worker distribution."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tf_skiprec.experiments import get_config
from tf_skiprec.errors import ConfigError
from tf_skiprec.compute import flops_per_request
from tf_skiprec.tuning.space import DEFAULT_SPACE, build_space, parse_dimension, within_limit
from tf_skiprec.tuning.report import pareto_front
from tf_skiprec.tuning.search import OVER_LIMIT, objective_rule, trial_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny trials: the smoke data, 2-3 blocks of 8 channels, the pool policy (the cnn body costs as
# much as 2 blocks: on 2 or 3 most budgets of the default space are infeasible).
TINY = ["--experiment=smoke", "--tune=model.channels=8", "--tune=model.num_blocks=2,3",
        "--override=train.pretrain_epochs=1", "--override=train.epochs=1",
        "--override=policy.body=pool"]


def _train_py(args, workdir, env=None, **kwargs):
  return subprocess.Popen([sys.executable, "train.py", f"--workdir={workdir}", *args], cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _finish(process, timeout=600) -> str:
  out, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, out[-3000:]
  return out


def _trials(workdir):
  with open(os.path.join(workdir, "trials.json")) as f:
    return json.load(f)


def _starts(workdir, trial):
  path = os.path.join(workdir, "keras_tuner", f"trial_{trial}", "runs.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_cli_narrows_adds_and_fixes_dimensions():
  config = get_config("smoke")
  space = {d.key: d for d in build_space(config, ["model.num_blocks=2,6",
                                                  "train.learning_rate=1e-4:1e-2:log",
                                                  "train.batch_size=16,32"], ["policy.budget"])}
  assert space["model.num_blocks"].choices == (2, 6)
  lr = space["train.learning_rate"]
  assert (lr.low, lr.high, lr.log) == (1e-4, 1e-2, True)
  assert space["train.batch_size"].choices == (16, 32)               # added
  assert "policy.budget" not in space                                # fixed by --override
  assert set(space) - {"train.batch_size"} == {d.key for d in DEFAULT_SPACE} - {"policy.budget"}
  with pytest.raises(ConfigError, match="model has no field 'depth'"):
    parse_dimension("model.depth=2,3", config)
  with pytest.raises(ConfigError, match="not a valid int"):
    parse_dimension("model.num_blocks=2,many", config)
  with pytest.raises(ConfigError, match="need low < high"):
    parse_dimension("train.learning_rate=1e-2:1e-4", config)


def test_a_search_resumed_with_other_dimensions_is_refused(tmp_path):
  from tf_skiprec.tuning.space import Dimension
  from tf_skiprec.tuning.search import _check_same_space
  first = [Dimension("model.num_blocks", choices=(2, 3))]
  _check_same_space(first, str(tmp_path))
  _check_same_space(first, str(tmp_path))                            # same: resumes
  with pytest.raises(ConfigError, match="other dimensions.*Fix: resume with the same"):
    _check_same_space([Dimension("model.num_blocks", choices=(2, 4))], str(tmp_path))
  with pytest.raises(ConfigError, match="cannot be searched"):
    parse_dimension("model.dilations=1,2", get_config("smoke"))
  pretrain_only = build_space(get_config("smoke"), [], ["train.mode"])
  assert not [d for d in pretrain_only if d.key.startswith("policy.")]


def test_objective_ranks_trials_over_the_limit_below_all_within_it():
  config = get_config("smoke")
  result = {"valid": {"NDCG@10": 0.3}, "valid_blocks": {"mean": 3.0}, "num_items": 80}
  within = trial_metrics(config, result, limit_blocks=3.0, limit_mflops=0.0)
  over = trial_metrics(config, result, limit_blocks=2.0, limit_mflops=0.0)
  assert within["score"] == 0.3 and within["mean_blocks"] == 3.0
  assert over["score"] == pytest.approx(-2.0 + 0.3 / (1.0 + 0.5 * 0.5))  # 50% over the limit
  assert within_limit(3.0, 10.0, 0.0, 5.0) == (False, 1.0)           # MFLOPs limit alone
  # smoke: 16 channels, kernel 3, window 20; pretrain mode: blocks + softmax only
  assert flops_per_request(config, 3.0, 80) == 3 * 4 * 3 * 16 * 16 * 20 + 2 * 16 * 81
  # SkipRec: + the policy, by body: the cnn body is 2 blocks, the pool body one 32 x 16 layer.
  config.train.mode = "gumbel"
  block, head = 4 * 3 * 16 * 16 * 20, 2 * 16 * 2 * config.model.num_blocks
  for body, cost in (("cnn", 2 * block), ("gru", 12 * 16 * 16 * 20), ("pool", 4 * 16 * 16)):
    config.policy.body = body
    assert flops_per_request(config, 3.0, 80) == 3 * block + 2 * 16 * 81 + cost + head


def _metrics(ndcg, blocks, limit_blocks=2.0, limit_mflops=0.0, selection_lambda=0.5):
  """trial_metrics on a hand-made run() result (smoke config, pretrain mode)."""
  config = get_config("smoke")
  config.policy.selection_lambda = selection_lambda
  result = {"valid": {"NDCG@10": ndcg}, "valid_blocks": {"mean": blocks}, "num_items": 80}
  return trial_metrics(config, result, limit_blocks=limit_blocks, limit_mflops=limit_mflops)


def test_objective_over_the_limit_prefers_much_more_accuracy_to_slightly_less_excess():
  accurate = _metrics(0.30, 2.2)                                     # 10 % over the limit
  frugal = _metrics(0.10, 2.1)                                       # 5 % over: 3x less accurate
  assert accurate["score"] > frugal["score"]                         # not by excess alone
  # ... but accuracy is not free either: 10 points of excess must buy > 5 % relative NDCG@10
  assert _metrics(0.104, 2.2)["score"] < _metrics(0.100, 2.0 + 1e-6)["score"]
  assert _metrics(0.106, 2.2)["score"] > _metrics(0.100, 2.0 + 1e-6)["score"]
  far = [_metrics(0.30, 2.0 * 8), _metrics(0.20, 2.0 * 10)]           # far over: still traded
  assert far[0]["score"] > far[1]["score"] > OVER_LIMIT


def test_objective_ranks_every_within_limit_trial_above_every_over_limit_one():
  worst_within = _metrics(0.0, 2.0)                                  # at the limit: within
  for lam in (0.0, 0.5, 0.99):
    best_over = _metrics(1.0, 2.0 * (1 + 1e-6), selection_lambda=lam)
    assert worst_within["score"] == 0.0 > best_over["score"]
  mflops = _metrics(0.0, 2.0, limit_blocks=0.0, limit_mflops=1.0)["mflops"]
  assert (_metrics(0.01, 2.0, limit_blocks=0.0, limit_mflops=mflops)["score"] >
          _metrics(0.9, 2.0, limit_blocks=0.0, limit_mflops=mflops * 0.99)["score"])
  assert _metrics(0.3, float("inf"))["score"] == OVER_LIMIT          # finite: still reported


def test_objective_over_the_limit_closed_form_uses_the_configs_selection_lambda():
  # 3 blocks against a limit of 2: relative excess 0.5
  assert _metrics(0.4, 3.0, selection_lambda=0.25)["score"] == pytest.approx(
      -2.0 + 0.4 / (1.0 + 0.25 * 0.5))                               # -1.644..
  assert _metrics(0.4, 3.0, selection_lambda=0.0)["score"] == pytest.approx(-2.0 + 0.4)
  tighter = _metrics(0.4, 3.0, limit_blocks=4.0, limit_mflops=1e-6)  # the tighter limit counts
  excess = tighter["mflops"] / 1e-6 - 1.0
  assert tighter["score"] == pytest.approx(-2.0 + 0.4 / (1.0 + 0.5 * excess))
  assert _metrics(0.4, 2.0)["score"] == 0.4                          # within: NDCG@10 itself
  assert "-2 + NDCG@10 / (1 + 0.25 x relative excess)" in objective_rule(2.0, 0.0, 0.25)
  assert objective_rule(0.0, 0.0, 0.5).startswith("score: validation NDCG@10 (no compute limit).")
  with pytest.raises(ConfigError, match="--override=policy.selection_lambda=x"):
    parse_dimension("policy.selection_lambda=0.1,0.5", get_config("smoke"))


def test_pareto_front_known_answer():
  points = [(2.0, 0.30, "a"), (3.0, 0.35, "b"), (3.0, 0.33, "c"), (4.0, 0.34, "d"),
            (1.0, 0.10, "e")]
  assert [p[2] for p in pareto_front(points)] == ["e", "a", "b"]


def test_a_two_trial_search_records_both_numbers_and_its_best_config_retrains(tmp_path):
  workdir = tmp_path / "search"
  out = _finish(_train_py(["--mode=tune", "--max_trials=2", "--limit_blocks=2.5", *TINY],
                          workdir))
  trials = _trials(workdir)
  assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
  searched = [d.key for d in DEFAULT_SPACE if d.key != "model.channels"]
  assert [t[k] for k in searched for t in trials[:1]] != [t[k] for k in searched for t in trials[1:]]
  for t in trials:
    assert 0.0 < t["valid_ndcg10"] <= 1.0 and t["mflops"] > 0
    assert 0.0 <= t["mean_blocks"] <= t["model.num_blocks"]
    excess = t["mean_blocks"] / 2.5 - 1.0                            # selection_lambda 0.5
    assert t["score"] == (t["valid_ndcg10"] if t["mean_blocks"] <= 2.5 else
                          pytest.approx(-2.0 + t["valid_ndcg10"] / (1.0 + 0.5 * excess)))
    assert len(_starts(workdir, t["trial"])) == 1
    with open(workdir / "keras_tuner" / f"trial_{t['trial']}" / "run" / "metrics.json") as f:
      assert json.load(f)["valid"]["NDCG@10"] == pytest.approx(t["valid_ndcg10"])
  assert (workdir / "pareto.png").stat().st_size > 1000
  assert "| trial | status |" in (workdir / "trials.md").read_text() and "best config" in out
  best = max(trials, key=lambda t: t["score"])
  with open(workdir / "best_config.json") as f:
    config = json.load(f)
  assert config["model"]["num_blocks"] == best["model.num_blocks"]
  assert config["train"]["mode"] == best["train.mode"]
  retrain = _finish(_train_py([f"--config={workdir / 'best_config.json'}"], tmp_path / "again"))
  assert "best epoch" in retrain
  assert (tmp_path / "again" / "metrics.json").exists()


def test_a_killed_search_resumes_its_unfinished_trial_from_its_checkpoint(tmp_path):
  workdir = tmp_path / "search"
  args = ["--mode=tune", "--max_trials=2", "--experiment=smoke", "--override=train.mode=pretrain",
          "--tune=model.channels=8", "--tune=model.num_blocks=2", "--override=train.epochs=12",
          "--override=train.patience=12", "--override=train.checkpoint_every_steps=2"]
  first = _train_py(args, workdir)
  checkpoints = workdir / "keras_tuner" / "trial_1" / "run" / "checkpoints"
  deadline = time.time() + 300
  while not (checkpoints.exists() and any(p.name.endswith(".index") for p in checkpoints.iterdir())):
    assert first.poll() is None and time.time() < deadline, "trial 1 never checkpointed"
    time.sleep(0.2)
  first.send_signal(signal.SIGKILL)
  first.communicate()
  assert not (checkpoints.parent / "metrics.json").exists()          # killed mid-trial
  _finish(_train_py(args, workdir))
  trials = _trials(workdir)
  assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
  assert len(_starts(workdir, "0")) == 1                             # finished: not run again
  assert len(_starts(workdir, "1")) == 2                             # interrupted: started again
  with open(checkpoints.parent / "metrics.json") as f:
    assert json.load(f)["resumed_from_step"] > 0                     # ... from its checkpoint


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_distributed_search_splits_trials_across_workers_and_runs_each_once(tmp_path):
  workdir = tmp_path / "search"
  args = ["--mode=tune", "--max_trials=4", "--experiment=smoke", "--override=train.mode=pretrain",
          "--tune=model.channels=8", "--tune=model.num_blocks=2,3,4", "--override=train.epochs=2"]
  env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
  chief = _train_py(args, workdir, env={**env, "KERASTUNER_TUNER_ID": "chief"})
  time.sleep(3)  # the chief's oracle listens first; workers retry their connection anyway
  workers = [_train_py(args, workdir, env={**env, "KERASTUNER_TUNER_ID": f"worker{i}"})
             for i in range(2)]
  for worker in workers:
    assert "worker done" in _finish(worker)
  _finish(chief)
  trials = _trials(workdir)
  assert len(trials) == 4 and {t["status"] for t in trials} == {"COMPLETED"}
  ran_by = {}
  for t in trials:
    starts = _starts(workdir, t["trial"])
    assert len(starts) == 1, (t["trial"], starts)                    # no trial run twice
    ran_by[t["trial"]] = starts[0]["tuner_id"]
  assert set(ran_by.values()) == {"worker0", "worker1"}, ran_by       # split across both


@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_run_and_hyperband_continues_earlier_rounds(kind, tmp_path):
  from tf_skiprec.tuning.space import Dimension
  from tf_skiprec.tuning.search import search
  config = get_config("smoke")
  config.model.channels = 8
  config.runtime.progress = False
  space = [Dimension("model.num_blocks", choices=(2, 3)),
           Dimension("train.learning_rate", low=3e-4, high=3e-3, log=True)]
  out = search(config, str(tmp_path), space, tuner=kind, max_trials=3, max_epochs=3,
               retrain_best=kind == "bayesian")
  trials = [t for t in out["trials"] if t["status"] == "COMPLETED"]
  assert len(trials) >= 3 and all(t["valid_ndcg10"] > 0 for t in trials)
  if kind == "bayesian":                                 # --retrain_best: workdir/best
    best = out["best_trial"]
    assert out["retrained"]["workdir"] == str(tmp_path / "best" / f"trial_{best['trial']}")
    with open(tmp_path / "best" / f"trial_{best['trial']}" / "config.json") as f:
      assert json.load(f)["model"]["num_blocks"] == best["model.num_blocks"]
  if kind == "hyperband":
    continued = 0
    for t in trials:
      with open(tmp_path / "keras_tuner" / f"trial_{t['trial']}" / "trial.json") as f:
        values = json.load(f)["hyperparameters"]["values"]
      with open(tmp_path / "keras_tuner" / f"trial_{t['trial']}" / "run" / "metrics.json") as f:
        result = json.load(f)
      assert result["epochs_run"] == values["tuner/epochs"]  # patience 5: no early stop
      if values.get("tuner/trial_id"):                    # a later round of an earlier trial
        with open(tmp_path / "keras_tuner" / f"trial_{values['tuner/trial_id']}" / "run" /
                  "metrics.json") as f:
          previous = json.load(f)
        assert result["resumed_from_step"] == previous["steps"] > 0
        assert result["steps"] > previous["steps"]        # ... and trained on from there
        continued += 1
    assert continued >= 1


def test_a_trial_whose_budget_is_below_its_policys_cost_is_scored_infeasible_not_trained(tmp_path):
  from tf_skiprec.tuning.space import Dimension
  from tf_skiprec.tuning.search import INFEASIBLE, search
  config = get_config("smoke")               # 4 blocks: the cnn policy costs 0.501 of them
  config.train.mode, config.train.pretrain_epochs = "gumbel", 1
  space = [Dimension("policy.budget", choices=(0.2, 0.4))]
  with pytest.raises(ConfigError, match="no trial was trained: every trial's policy.budget is "
                                        "below its policy network's own cost"):
    search(config, str(tmp_path), space, max_trials=4)
  trials = _trials(tmp_path)
  assert {t["policy.budget"] for t in trials} == {0.2, 0.4}
  assert all(t["score"] == INFEASIBLE for t in trials)
  assert not list((tmp_path / "keras_tuner").glob("trial_*/run"))      # nothing was trained
  assert "was not trained" in (tmp_path / "trials.md").read_text()


def test_skiprec_trials_without_a_backbone_to_start_from_are_refused_before_searching(tmp_path):
  from tf_skiprec.tuning.search import search
  config = get_config("smoke")                         # pretrain_epochs 0, no init_from
  with pytest.raises(ConfigError, match="--override=train.pretrain_epochs=N"):
    search(config, str(tmp_path), build_space(config, [], []))
  config.train.init_from = str(tmp_path / "pretrained")  # shared backbone, but depth searched
  with pytest.raises(ConfigError, match="no model.\\* dimension searched"):
    search(config, str(tmp_path), build_space(config, [], []))
  assert not (tmp_path / "keras_tuner").exists()       # nothing started
