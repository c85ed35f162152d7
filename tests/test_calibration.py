"""train.calibrate_threshold: the keep threshold raised, after training, to the lowest of the
validation sweep's that holds the blocks' budget (tf_skiprec/training/end_of_run.py). Known
answers on hand-made sweeps, then a run whose evaluation and export use the threshold chosen."""

import pytest

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.experiments import get_config
from tf_skiprec.training import end_of_run, run
from tf_skiprec.training.end_of_run import calibrated_threshold


def _config(usage: float, threshold: float = 0.5):
  config = get_config("smoke")
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
  sweep = {p["threshold"]: p for p in result["threshold_sweep"]}
  chosen = result["threshold"]
  assert result["threshold_calibration"]["threshold"] == chosen
  assert chosen in sweep and chosen > 0.5                              # raised: it ran over
  assert sweep[chosen]["mean_blocks"] / 4 <= 0.25 + 1e-9               # holds the budget
  below = [t for t in sweep if 0.5 <= t < chosen]
  assert all(sweep[t]["mean_blocks"] / 4 > 0.25 for t in below)        # the lowest that does
  assert result["valid_blocks"]["mean"] == pytest.approx(sweep[chosen]["mean_blocks"])
  assert exported == [chosen]
