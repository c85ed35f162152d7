"""What a run does once training has stopped, each in its own function: the final evaluation of
the best model, the threshold and max_blocks sweeps and calibrations, the plots, the export and
metrics.json.

Every function takes the trainer (after `restore_best`) or the results it returns, and all
workers of a multi-worker run call the evaluations together (each evaluates on its own copy of
the model); only the chief writes files.
"""

from __future__ import annotations

import copy
import logging
import math
import os

import numpy as np

from tf_skiprec.compute import block_budget, request_compute
from tf_skiprec.config import Config
from tf_skiprec.data.synthetic import group_lag
from tf_skiprec.export.exporter import export_model
from tf_skiprec.training import plots, workdir as workdir_lib
from tf_skiprec.training.selection import SELECT_METRIC, selection_rule
from tf_skiprec.training.trainer import Trainer

# Keep thresholds of the validation sweep; 0 keeps every block (P(keep) >= 0).
SWEEP_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# train.calibrate_threshold's bisection: its steps, and the highest threshold it tries (the largest
# float32 below 1; P(keep) is float32, so a threshold of 1 would keep only P(keep) rounded to 1).
REFINE_STEPS = 10
THRESHOLD_CEILING = float(np.nextafter(np.float32(1), np.float32(0)))
CAP_POINTS = 10  # values of max_blocks in the compute-cap sweep, 1 to N, geometrically spaced


def final_evaluation(trainer: Trainer) -> dict:
  """Validation and test metrics of the best model at policy.threshold:
  {"mode", "valid", "valid_by_kind", "valid_blocks", "test", ..., "selection_rule"}.

  selection_rule: the rule that chose the best epoch (selection.py), from its validation result,
  which this validation evaluation of the best model reproduces.
  min_blocks_by_kind: for the graded synthetic groups, the fewest blocks of this backbone that
  can see the context each group's next item depends on (backbone.blocks_to_reach).
  test_compute: the estimated MFLOPs of a test request, the policy's beside the blocks'
  (compute.request_compute).
  """
  results = {"mode": trainer.mode}
  for split, windows in (("valid", trainer.data.valid), ("test", trainer.data.test)):
    out = trainer.evaluate(windows, trainer.config.policy.threshold, trainer.config.policy.cap)
    results[split], results[f"{split}_by_kind"] = out["metrics"], out["by_kind"]
    results[f"{split}_blocks"] = out["blocks"]
    if split == "valid":
      results["selection_rule"] = selection_rule(out, trainer.config)
  minimums = min_blocks_by_kind(results["test_by_kind"], trainer.model.backbone)
  if minimums:
    results["min_blocks_by_kind"] = minimums
  results["test_compute"] = request_compute(trainer.config, results["test_blocks"]["mean"],
                                            trainer.data.sequences.id_map.num_items)
  return results


def min_blocks_by_kind(kinds, backbone) -> dict[str, int | None]:
  """{graded group: the fewest blocks that see `lag` items back} for the kinds that are graded
  groups (synthetic.group_lag); the item lag steps back sets the next one, so the last
  position must see lag - 1 steps before it."""
  return {kind: backbone.blocks_to_reach(group_lag(kind) - 1)
          for kind in kinds if group_lag(kind) is not None}


def threshold_sweep(trainer: Trainer) -> list[dict]:
  """Validation accuracy and mean executed blocks at each of SWEEP_THRESHOLDS:
  [{"threshold", "mean_blocks", "HR@5", ...}, ...] (SkipRec: raising the threshold runs fewer
  blocks with no retraining), with the configured cap (policy.max_blocks) if any."""
  sweep = []
  for threshold in SWEEP_THRESHOLDS:
    out = trainer.evaluate(trainer.data.valid, threshold, trainer.config.policy.cap)
    sweep.append({"threshold": threshold, "mean_blocks": out["blocks"]["mean"], **out["metrics"]})
  return sweep


def calibrated_threshold(config: Config, sweep: list[dict], num_blocks: int,
                         mean_blocks=None, steps: int = REFINE_STEPS) -> dict:
  """train.calibrate_threshold: the keep threshold that holds the budget on validation.

  Training holds the budget for its sampled decisions; evaluation and serving keep a block when
  P(keep) >= policy.threshold, which can run over it (a block whose P(keep) sits just above the
  threshold). This picks the lowest threshold of the validation `sweep` (threshold_sweep), at
  or above policy.threshold, whose validation usage (mean blocks / N) is within the blocks'
  budget (compute.block_budget: policy.budget less the policy's own share).

  With `mean_blocks` it then narrows that down. The sweep's grid is coarse where a decisive
  policy's P(keep) sits, near 1: on ML-100k a SASRec policy still ran 4.3 of 8 blocks at 0.95,
  against a budget of 4, and 4.05 at 0.982 (BUILD_NOTES.md, "SASRec", fifth session). So it
  bisects `steps` times, on the logit log(t / (1 - t)), between the highest threshold that runs
  over and the lowest that holds; when none of the sweep holds, between the sweep's top and
  THRESHOLD_CEILING, the highest float32 threshold below 1 (a request's threshold is float32).
  It takes the lowest threshold found that holds. Usage never rises with the threshold, so this
  converges on the edge of the budget.

  It looks at usage only, never at accuracy, and never lowers the threshold.

  Args:
    mean_blocks: threshold -> the mean blocks executed per validation user at it (with the run's
      cap), or None to choose on the sweep alone.

  Returns {"threshold", "calibrated" (False: policy.threshold already holds it), "valid_usage",
  "budget", "evaluated" ({threshold: mean blocks}, every one looked at)}; "threshold" is None
  when no threshold holds the budget.
  """
  budget, start = block_budget(config), config.policy.threshold
  evaluated = {p["threshold"]: p["mean_blocks"] for p in sweep if p["threshold"] >= start}
  if mean_blocks is not None and start not in evaluated:
    evaluated[start] = float(mean_blocks(start))

  def holds(threshold: float) -> bool:
    return evaluated[threshold] / num_blocks <= budget + 1e-9

  over = max((t for t in evaluated if not holds(t)), default=None)   # thresholds only rise
  found = min((t for t in evaluated if holds(t) and (over is None or t > over)), default=None)
  if mean_blocks is not None and over is not None:
    if found is None:
      evaluated[THRESHOLD_CEILING] = float(mean_blocks(THRESHOLD_CEILING))
      found = THRESHOLD_CEILING if holds(THRESHOLD_CEILING) else None
    for _ in range(steps if found is not None else 0):
      middle = _float32(_sigmoid((_logit(over) + _logit(found)) / 2))
      if not over < middle < found:     # as fine as float32 goes
        break
      evaluated[middle] = float(mean_blocks(middle))
      if holds(middle):
        found = middle
      else:
        over = middle
  return {"threshold": found, "calibrated": found is not None and found != start,
          "valid_usage": None if found is None else evaluated[found] / num_blocks,
          "budget": budget,
          "evaluated": {repr(t): b for t, b in sorted(evaluated.items())}}


def _logit(p: float) -> float:
  """log(p / (1 - p)), held within +-30 (a threshold of 0 at -30: P(keep) below 1e-13 is 0)."""
  return min(max(math.log(max(p, 1e-30)) - math.log1p(-min(p, 1 - 1e-16)), -30.0), 30.0)


def _sigmoid(z: float) -> float:
  return 1.0 / (1.0 + math.exp(-z))


def _float32(x: float) -> float:
  """x rounded to float32, the precision P(keep) is compared at: what is evaluated is served."""
  return float(np.float32(x))


def calibrated_max_blocks(config: Config, mean_blocks) -> dict:
  """train.calibrate_max_blocks: the cap that holds the budget on validation.

  A decisive policy (P(keep) near 0 or 1) hardly moves with the threshold, so no threshold may
  hold the budget (calibrated_threshold); the cap does, whatever the policy's certainty: a user
  runs at most its m most probable blocks (policy.keep_at_most). This picks the largest m, at or
  below policy.max_blocks (N when 0), whose validation usage at policy.threshold is within the
  blocks' budget (compute.block_budget). Usage never falls as m grows (a user runs min(its
  blocks, m)), so a binary search finds it in log2(N) evaluations (one when the configured cap
  already holds it). It looks at usage only, never at accuracy, and never raises the cap.

  Args:
    mean_blocks: m -> the mean blocks executed per validation user with the cap m.

  Returns {"max_blocks" (None: even one block is over the budget), "calibrated" (False: the
  configured cap already holds it), "valid_usage", "budget", "evaluated" ({m: mean blocks})}.
  """
  budget, n = block_budget(config), config.model.num_blocks
  evaluated = {}

  def holds(m: int) -> bool:
    evaluated[m] = float(mean_blocks(m))
    return evaluated[m] / n <= budget + 1e-9

  start = config.policy.max_blocks or n
  if holds(start):              # the configured cap (or none) already holds it: one evaluation
    return {"max_blocks": start, "calibrated": False, "valid_usage": evaluated[start] / n,
            "budget": budget, "evaluated": {str(start): evaluated[start]}}
  found, low, high = None, 1, start - 1
  while low <= high:            # the largest m in [1, start) that holds the budget
    m = (low + high) // 2
    if holds(m):
      found, low = m, m + 1
    else:
      high = m - 1
  return {"max_blocks": found, "calibrated": found is not None and found != start,
          "valid_usage": None if found is None else evaluated[found] / n, "budget": budget,
          "evaluated": {str(m): b for m, b in sorted(evaluated.items())}}


def calibrate(trainer: Trainer, sweep: list[dict]) -> tuple[Config, dict]:
  """train.calibrate_threshold and train.calibrate_max_blocks, applied to the trainer: returns
  (the config from here on, also set as trainer.config; {"threshold_calibration",
  "max_blocks_calibration", "calibration_choice"}, each present when it was done).

  Each knob is calibrated on its own, from the run's configured threshold and cap: the threshold
  (calibrated_threshold, bisecting on validation usage at the configured cap) and the cap
  (calibrated_max_blocks, at the configured threshold). When both had to move to hold the
  budget, each holds it, and the one whose validation NDCG@10 is higher is applied (ties: the
  threshold), as the run's epochs are chosen: a threshold near 1 keeps, of each user's blocks,
  those the policy is surest of, and a cap the user's m most probable ones, and which costs less
  accuracy differs from one policy to the next (BUILD_NOTES.md, "SASRec", fifth session). The
  run's own config is not changed in place; the final evaluation's selection_rule is then read
  at the calibrated decisions, not at those that chose the epoch.
  """
  config, train = trainer.config, trainer.config.train
  policy, seen = config.policy, {}

  def valid_at(threshold, cap) -> tuple[float, float]:
    """(mean blocks, NDCG@10) on validation, each (threshold, cap) evaluated once."""
    if (threshold, cap) not in seen:
      out = trainer.evaluate(trainer.data.valid, threshold, cap)
      seen[threshold, cap] = (out["blocks"]["mean"], out["metrics"][SELECT_METRIC])
    return seen[threshold, cap]

  found = {}
  if train.calibrate_threshold:
    found["threshold"] = calibrated_threshold(config, sweep, config.model.num_blocks,
                                              lambda t: valid_at(t, policy.cap)[0])
  if train.calibrate_max_blocks:
    found["max_blocks"] = calibrated_max_blocks(config, lambda m: valid_at(policy.threshold, m)[0])
  calibrations = {f"{field}_calibration": c for field, c in found.items()}
  moved = [field for field, c in found.items() if c["calibrated"]]
  if len(moved) == 2:
    scores = {"threshold": valid_at(found["threshold"]["threshold"], policy.cap)[1],
              "max_blocks": valid_at(policy.threshold, found["max_blocks"]["max_blocks"])[1]}
    chosen = max(moved, key=scores.get)
    calibrations["calibration_choice"] = {"chosen": chosen, "metric": SELECT_METRIC,
                                          "valid": scores}
    logging.info("Calibration: policy.%s, whose validation %s is %.4f against %.4f.", chosen,
                 SELECT_METRIC, scores[chosen], min(scores.values()))
    found = {chosen: found[chosen]}
  for field, calibration in found.items():
    _apply(trainer, calibration, field)
  return trainer.config, calibrations


def _apply(trainer: Trainer, calibration: dict, field: str) -> None:
  """Logs a calibration of policy.<field> and, when it chose another value, sets it in a copy of
  the trainer's config that becomes trainer.config."""
  flag, budget = f"train.calibrate_{field}", calibration["budget"]
  if calibration[field] is None:
    logging.warning("%s: no %s holds the blocks' budget of %.3f on validation; policy.%s stays "
                    "%s.", flag, field, budget, field, getattr(trainer.config.policy, field))
  elif calibration["calibrated"]:
    logging.info("%s: policy.%s = %s (validation usage %.3f, budget %.3f).", flag, field,
                 calibration[field], calibration["valid_usage"], budget)
    trainer.config = copy.deepcopy(trainer.config)    # the run's own config stays as it was
    setattr(trainer.config.policy, field, calibration[field])


def sweep_caps(num_blocks: int, points: int = CAP_POINTS) -> list[int]:
  """The max_blocks values of the cap sweep: 1, N and up to `points` in all, evenly spaced on a
  log scale (every value when N <= points)."""
  if num_blocks <= points:
    return list(range(1, num_blocks + 1))
  return sorted({1, num_blocks, *(int(round(m)) for m in np.geomspace(1, num_blocks, points))})


def max_blocks_sweep(trainer: Trainer) -> list[dict]:
  """Validation accuracy when each user runs exactly its m most probable blocks (threshold 0, cap
  m), for m from 1 to N (sweep_caps): [{"max_blocks", "mean_blocks", "HR@5", ...}, ...].

  The serving `max_blocks` input: unlike the threshold, which a decisive policy hardly moves, it
  spans every compute level from 1 block to N. With the run's threshold instead of 0 it only
  lowers compute (a user keeps min(its blocks, m)).
  """
  sweep = []
  for cap in sweep_caps(trainer.model.backbone.num_blocks):
    out = trainer.evaluate(trainer.data.valid, 0.0, cap)
    sweep.append({"max_blocks": cap, "mean_blocks": out["blocks"]["mean"], **out["metrics"]})
  return sweep


def draw_plots(results: dict, workdir: str) -> dict:
  """usage_by_block.png and accuracy_vs_blocks.png (both sweeps, against every block) in
  `workdir`; returns their paths."""
  sweep = results["threshold_sweep"]
  full = next(p for p in sweep if p["threshold"] == 0.0)
  paths = {}
  if results.get("min_blocks_by_kind"):
    paths["blocks_by_group"] = plots.blocks_by_group(
        results["test_blocks"]["by_kind"], results["min_blocks_by_kind"],
        results["test_blocks"]["num_blocks"], os.path.join(workdir, "blocks_by_group.png"))
  return {**paths,
      "usage_by_block": plots.usage_by_block(results["valid_blocks"]["block_usage"],
                                             os.path.join(workdir, "usage_by_block.png")),
      "accuracy_vs_blocks": plots.accuracy_vs_blocks(
          [p for p in sweep if p["threshold"] > 0], full,
          os.path.join(workdir, "accuracy_vs_blocks.png"), results.get("max_blocks_sweep")),
  }


def export_best(trainer: Trainer, config: Config) -> dict:
  """Exports the best model for TF Serving (tf_skiprec/export/exporter.py), its decisions at
  policy.threshold by default, checked on the first export.num_check_histories validation
  histories; returns {"path", "version"}. The chief only: it reads the evaluation copy, which the
  last evaluation refreshed from the best model."""
  export, data = config.export, trainer.data
  histories = next(iter(data.pipelines.evaluation(data.valid, export.num_check_histories)))
  return export_model(
      trainer.evaluate.model, data.id_map, base_dir=export.base_dir,
      model_name=export.model_name, max_len=config.data.max_len,
      sample_histories=histories["history"].numpy(), top_k=export.top_k,
      threshold=config.policy.threshold, max_blocks=config.policy.cap)


def write_metrics(results: dict, workdir: str) -> None:
  """metrics.json, atomically."""
  workdir_lib.write_json(results, os.path.join(workdir, workdir_lib.METRICS_FILE))
