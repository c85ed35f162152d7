"""train.calibrate_threshold: the keep threshold raised, after training, to the lowest of the
validation sweep's that holds the blocks' budget; train.calibrate_max_blocks: the largest cap
that holds it (tf_skiprec/training/end_of_run.py). Known answers on hand-made sweeps and users,
then runs whose evaluation and export use what was chosen."""

import numpy as np
import pytest

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.experiments import get_config
from tf_skiprec.training import end_of_run, run
from tf_skiprec.export.runner import SavedModelRunner
from tf_skiprec.training.end_of_run import calibrated_max_blocks, calibrated_threshold
from tf_skiprec.training.report import decisions_line


def _config(usage: float, threshold: float = 0.5, num_blocks: int = 4):
  config = get_config("smoke")
  config.model.num_blocks = num_blocks
  config.train.mode = "gumbel"
  config.policy.body = "pool"
  config.policy.budget = budget_for_usage(config, usage)   # the blocks at `usage`
  config.policy.threshold = threshold
  return config


def _sweep(blocks_by_threshold: dict[float, float]) -> list[dict]:
  return [{"threshold": t, "mean_blocks": b, "NDCG@10": 0.1}
          for t, b in blocks_by_threshold.items()]


def test_the_lowest_threshold_at_or_above_the_configured_one_that_holds_the_budget():
  sweep = _sweep({0.0: 8.0, 0.4: 3.0, 0.5: 4.9, 0.6: 4.2, 0.7: 3.8, 0.8: 2.0})
  got = calibrated_threshold(_config(0.5), sweep, num_blocks=8)        # at most 4 of 8 blocks
  assert got["threshold"] == 0.7 and got["calibrated"]                  # not 0.4: never lowered
  assert got["valid_usage"] == pytest.approx(3.8 / 8) and got["budget"] == pytest.approx(0.5)
  kept = calibrated_threshold(_config(0.7), sweep, num_blocks=8)        # 4.9 of 8 is within 0.7
  assert kept["threshold"] == 0.5 and not kept["calibrated"]
  exact = calibrated_threshold(_config(0.5), _sweep({0.5: 4.0}), num_blocks=8)
  assert exact["threshold"] == 0.5                                      # the budget itself holds
  none = calibrated_threshold(_config(0.1), sweep, num_blocks=8)        # 0.8 blocks: none
  assert none["threshold"] is None and not none["calibrated"]


def _kept(*users):
  """mean_blocks(threshold) for users with these P(keep), compared in float32 as
  policy.greedy_decisions compares them; and the thresholds it was called with."""
  prob, calls = np.array(users, np.float32), []

  def mean_blocks(threshold):
    calls.append(threshold)
    return float(np.mean(np.sum(prob >= np.float32(threshold), axis=1)))
  return mean_blocks, calls


# Two decisive users: at 0.95 both keep 5 of 8 blocks. Their kept blocks, most probable first:
# .9999 .9995 .9992 .9991 .999 .998 .997 .996 | .995 .99, so at most 4 each (8 in all) means a
# threshold in (0.995, 0.996].
DECISIVE = ([0.999, 0.998, 0.997, 0.996, 0.995, 0.1, 0.1, 0.01],
            [0.9999, 0.9995, 0.9992, 0.9991, 0.99, 0.2, 0.1, 0.1])
GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def test_a_threshold_near_1_that_the_sweep_misses_is_found_by_bisection():
  mean_blocks, calls = _kept(*DECISIVE)
  sweep = _sweep({t: mean_blocks(t) for t in GRID})
  assert calibrated_threshold(_config(0.5), sweep, num_blocks=8)["threshold"] is None
  calls.clear()
  got = calibrated_threshold(_config(0.5), sweep, 8, mean_blocks)
  assert calls[0] == end_of_run.THRESHOLD_CEILING and len(calls) <= 1 + end_of_run.REFINE_STEPS
  assert 0.995 < got["threshold"] <= 0.996 and got["calibrated"]
  assert got["valid_usage"] == pytest.approx(0.5) and mean_blocks(got["threshold"]) == 4.0
  assert got["threshold"] == float(np.float32(got["threshold"]))      # served as evaluated
  over = [float(t) for t, b in got["evaluated"].items() if b / 8 > 0.5]
  assert max(over) < got["threshold"]                                  # the lowest that holds
  # A looser budget, 4.5 of 8 (9 blocks in all): a threshold in (0.99, 0.995].
  loose = calibrated_threshold(_config(4.5 / 8), sweep, 8, _kept(*DECISIVE)[0])
  assert 0.99 < loose["threshold"] <= 0.995
  # Bisection between two points of the sweep that bracket the edge.
  mean_blocks, calls = _kept([0.75, 0.72, 0.69, 0.65, 0.2], [0.9, 0.8, 0.75, 0.62, 0.1])
  bracket = _sweep({t: mean_blocks(t) for t in GRID})
  calls.clear()
  mid = calibrated_threshold(_config(0.5, num_blocks=5), bracket, 5, mean_blocks)
  assert 0.69 < mid["threshold"] <= 0.72 and mean_blocks(mid["threshold"]) == 2.5
  assert all(0.6 < t < 0.7 for t in calls[:-1])                       # only within the bracket
  # The configured threshold already holds: nothing is evaluated, nothing changes.
  mean_blocks, calls = _kept(*DECISIVE)
  held = calibrated_threshold(_config(0.7), _sweep({0.5: 5.0}), 8, mean_blocks)
  assert held["threshold"] == 0.5 and not held["calibrated"] and calls == []
  # Not even the highest float32 threshold below 1 holds it: none, for the cap to act.
  mean_blocks, _ = _kept([1.0] * 8, [1.0] * 8)
  assert calibrated_threshold(_config(0.5), sweep, 8, mean_blocks)["threshold"] is None


class _Users:
  """A stand-in for a trainer whose validation users have these P(keep) [U, N]: evaluate()
  decides as policy.greedy_decisions does, and its NDCG@10 is the mean of `gain` over the blocks
  each user runs, so which blocks run decides which calibration scores higher."""

  def __init__(self, config, prob, gain):
    self.config, self.prob, self.gain = config, np.array(prob, np.float32), np.array(gain)
    self.data = type("Data", (), {"valid": "valid"})()

  def evaluate(self, windows, threshold, max_blocks=None):
    assert windows == "valid"                                         # never the test split
    keep = self.prob >= np.float32(threshold)
    if max_blocks is not None:
      rank = np.argsort(np.argsort(-self.prob, axis=1, kind="stable"), axis=1, kind="stable")
      keep &= rank < max_blocks
    return {"blocks": {"mean": float(keep.sum(1).mean())},
            "metrics": {"NDCG@10": float((keep * self.gain).sum(1).mean())}}


# At 0.5, user A keeps 6 blocks and B 3: 4.5 of 8, over a budget of 4. A threshold in (0.7, 0.8]
# holds it with A's 6 and B's 2; a cap of 5 with A's 5 and B's 3.
TWO_WAYS = ([0.999, 0.998, 0.997, 0.996, 0.995, 0.99, 0.1, 0.1],
            [0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("gain_at, applied", [((1, 2), "max_blocks"), ((0, 5), "threshold")])
def test_with_both_calibrations_the_one_better_on_validation_is_applied(gain_at, applied):
  config = _config(0.5, num_blocks=8)
  config.train.calibrate_threshold = config.train.calibrate_max_blocks = True
  gain = np.zeros([2, 8])
  gain[gain_at] = 1.0                                 # B's third block, or A's sixth
  trainer = _Users(config, TWO_WAYS, gain)
  sweep = [{"threshold": t, "mean_blocks": trainer.evaluate("valid", t)["blocks"]["mean"]}
           for t in GRID]
  got, calibrations = end_of_run.calibrate(trainer, sweep)
  assert 0.7 < calibrations["threshold_calibration"]["threshold"] <= 0.8
  assert calibrations["max_blocks_calibration"]["max_blocks"] == 5
  choice = calibrations["calibration_choice"]
  assert choice["chosen"] == applied and choice["valid"][applied] == 0.5
  assert choice["valid"][{"threshold": "max_blocks", "max_blocks": "threshold"}[applied]] == 0.0
  assert got is trainer.config and config.policy.threshold == 0.5    # the run's own: unchanged
  if applied == "max_blocks":
    assert (got.policy.threshold, got.policy.max_blocks) == (0.5, 5)
  else:
    assert got.policy.max_blocks == 0 and 0.7 < got.policy.threshold <= 0.8
  # One knob alone is applied as found, with no choice to make.
  config.train.calibrate_max_blocks = False
  alone, calibrations = end_of_run.calibrate(_Users(config, TWO_WAYS, gain), sweep)
  assert "calibration_choice" not in calibrations and 0.7 < alone.policy.threshold <= 0.8


def test_a_calibrated_run_evaluates_and_exports_at_the_threshold_it_chose(tmp_path, monkeypatch):
  exported = []

  def export_model(*args, threshold, **kwargs):     # the export checks itself at `threshold`
    exported.append(threshold)
    return real_export(*args, threshold=threshold, **kwargs)

  real_export = end_of_run.export_model
  monkeypatch.setattr(end_of_run, "export_model", export_model)
  config = _config(0.25)
  config.train.pretrain_epochs, config.train.epochs = 1, 2
  config.policy.penalty = 0.0            # no pressure: the policy keeps more than its budget
  config.train.calibrate_threshold = True
  config.export.base_dir = str(tmp_path / "models")
  result = run(config, str(tmp_path / "w"))
  calibration = result["threshold_calibration"]
  evaluated = {float(t): b for t, b in calibration["evaluated"].items()}
  chosen = result["threshold"]
  assert calibration["threshold"] == chosen
  assert chosen in evaluated and chosen > 0.5                          # raised: it ran over
  assert evaluated[chosen] / 4 <= 0.25 + 1e-9                          # holds the budget
  below = [t for t in evaluated if 0.5 <= t < chosen]
  assert below and all(evaluated[t] / 4 > 0.25 for t in below)         # the lowest that does
  sweep = {p["threshold"]: p["mean_blocks"] for p in result["threshold_sweep"]}
  assert all(evaluated[t] == sweep[t] for t in sweep if t >= 0.5)      # the sweep, then refined
  assert result["valid_blocks"]["mean"] == pytest.approx(evaluated[chosen])
  assert exported == [chosen]


def _capped(blocks_per_user):
  """mean_blocks(m) for users who keep these many blocks at the threshold: each runs min(k, m)."""
  calls = []

  def mean_blocks(m):
    calls.append(m)
    return float(np.mean(np.minimum(blocks_per_user, m)))
  return mean_blocks, calls


def test_the_largest_cap_at_or_below_the_configured_one_that_holds_the_budget():
  users = [8, 6, 5, 5, 3, 2]                 # 4.83 of 8 blocks at the threshold: over 0.5
  mean_blocks, calls = _capped(users)
  got = calibrated_max_blocks(_config(0.5, num_blocks=8), mean_blocks)
  assert got["max_blocks"] == 4 and got["calibrated"]         # 3.5 blocks; a cap of 5 runs 4.17
  assert got["valid_usage"] == pytest.approx(3.5 / 8) and got["budget"] == pytest.approx(0.5)
  assert len(calls) <= 4 and got["evaluated"]["4"] == 3.5     # a binary search over 1..8
  low = _config(0.5, num_blocks=8)
  low.policy.max_blocks = 3                                     # the configured cap holds: kept
  kept = calibrated_max_blocks(low, _capped(users)[0])
  assert kept["max_blocks"] == 3 and not kept["calibrated"]
  mean_blocks, calls = _capped(users)
  within = calibrated_max_blocks(_config(0.7, num_blocks=8), mean_blocks)   # 4.83 of 8: within
  assert within["max_blocks"] == 8 and not within["calibrated"] and calls == [8]
  exact = calibrated_max_blocks(_config(0.5, num_blocks=8), _capped([4, 4])[0])
  assert exact["max_blocks"] == 8                                       # the budget itself holds
  none = calibrated_max_blocks(_config(0.1, num_blocks=8), _capped(users)[0])  # 1 of 8: over 0.1
  assert none["max_blocks"] is None and not none["calibrated"] and none["valid_usage"] is None


def test_a_capped_run_evaluates_and_exports_at_the_cap_it_chose(tmp_path, monkeypatch):
  exported = []

  def export_model(*args, max_blocks, **kwargs):    # the export checks itself at the cap
    exported.append(max_blocks)
    return real_export(*args, max_blocks=max_blocks, **kwargs)

  real_export = end_of_run.export_model
  monkeypatch.setattr(end_of_run, "export_model", export_model)
  config = _config(0.25)                 # at most 1 of 4 blocks
  config.train.pretrain_epochs, config.train.epochs = 1, 2
  config.policy.penalty = 0.0            # no pressure: the policy keeps more than its budget
  config.train.calibrate_max_blocks = True
  config.export.base_dir = str(tmp_path / "models")
  result = run(config, str(tmp_path / "w"))
  calibration = result["max_blocks_calibration"]
  chosen = result["max_blocks"]
  assert calibration["calibrated"] and calibration["max_blocks"] == chosen
  at_half = next(p for p in result["threshold_sweep"] if p["threshold"] == 0.5)
  assert at_half["mean_blocks"] / 4 > 0.25                               # at 0.5 it ran over
  evaluated = {int(m): b for m, b in calibration["evaluated"].items()}
  assert evaluated[chosen] / 4 <= 0.25 + 1e-9                           # the cap holds it
  assert all(b / 4 > 0.25 for m, b in evaluated.items() if m > chosen)  # the largest that does
  assert result["valid_blocks"]["mean"] == pytest.approx(evaluated[chosen])
  assert result["test_blocks"]["max"] <= chosen
  assert exported == [chosen]
  served = SavedModelRunner(result["export"]["path"])                   # the default cap
  try:
    out = served.run({"history": np.array([["1", "2", "3", "4", "5", "6"]] * 3)}, "decisions")
  finally:
    served.close()
  assert np.all(out["blocks_executed"] <= chosen)


def test_the_decisions_line_says_what_each_calibration_did():
  held = {"threshold": 0.5, "max_blocks": 0,
          "threshold_calibration": {"threshold": 0.5, "calibrated": False, "budget": 0.5}}
  assert decisions_line(held) == ("decisions: keep a block iff P(keep) >= 0.50; the threshold "
                                  "already held the budget (0.500)")
  capped = {"threshold": 0.5, "max_blocks": 5,
            "threshold_calibration": {"threshold": None, "calibrated": False, "budget": 0.5},
            "max_blocks_calibration": {"max_blocks": 5, "calibrated": True, "budget": 0.5,
                                       "valid_usage": 0.4375}}
  assert decisions_line(capped) == (
      "decisions: keep a block iff P(keep) >= 0.50, at most 5 blocks per user; no threshold held "
      "the budget (0.500) on validation; max_blocks calibrated to hold the budget (0.500): "
      "validation usage 0.438")
  bisected = {"threshold": float(np.float32(0.98734)), "max_blocks": 0}   # not printed as 0.99
  assert decisions_line(bisected) == "decisions: keep a block iff P(keep) >= 0.98734"
  chose = dict(capped, calibration_choice={"chosen": "max_blocks", "metric": "NDCG@10",
                                           "valid": {"threshold": 0.05, "max_blocks": 0.0632}})
  assert decisions_line(chose).endswith(
      "; applied: the max_blocks, validation NDCG@10 0.0632 against the threshold's 0.0500")
