"""Keras Tuner search of SkipRec's accuracy-versus-compute trade-off: `train.py --mode=tune`.

  python train.py --mode=tune --experiment=smoke --workdir=runs/tune --tuner=random \\
      --max_trials=8 --limit_blocks=3 --tune=model.num_blocks=4,8 --override=train.epochs=3 \
      --override=train.pretrain_epochs=2

`SkipRecTuner` is a Keras Tuner `BaseTuner` whose `run_trial` maps the trial's hyper-parameters
onto the config (tf_skiprec/tuning/space.py) and calls `run(config, workdir)`, the same entry
point as `train.py`: there is no second training loop. (Keras Tuner's HyperModel path
type-checks models against Keras 3 and fails with tf_keras; see README.md, "Keras 2".) Early
stopping within a trial is run()'s own (`train.patience`).

Objective ("score", maximised; `trial_metrics`), from validation only. A trial is within the limit
if its mean executed blocks are <= `--limit_blocks` and its estimated MFLOPs per request are <=
`--limit_mflops` (a limit <= 0 is none); its relative excess is how far it is over the tighter
one (mean_blocks / limit_blocks - 1 or mflops / limit_mflops - 1; 0 within the limit).
  - Within the limit: score = NDCG@10, in [0, 1]; the most accurate trial wins.
  - Over it: score = OVER_LIMIT + NDCG@10 / (1 + lambda * excess), in [-2, -1], so every trial
    within the limit ranks above every trial over it. Over-limit trials (they win only when no
    trial is within the limit) trade accuracy against excess, relative to the NDCG@10 scale as
    the run's model selection does (tf_skiprec/training/selection.py), never by excess alone:
    of two, the one with more excess e2 > e1 wins iff its NDCG@10 is higher by more than the
    factor (1 + lambda e2) / (1 + lambda e1). With lambda = 0.5: 10 points more excess must buy
    more than 5 % relative NDCG@10 from e = 0, 3.3 % from e = 1.
    lambda = policy.selection_lambda (in [0, 1), default 0.5) of the trial's config: the same
    price of compute the run's own model selection uses, set once with
    --override=policy.selection_lambda=x (it cannot be searched, which would give each trial its
    own objective). lambda = 0: over-limit trials rank by NDCG@10 alone.
    The factor 1 / (1 + lambda e) is 1 - lambda e to first order, but unlike a linear
    1 - lambda e it never reaches 0 (no clipping needed): far over the limit (e = 2 and more at
    lambda = 0.5), a clipped linear factor would tie every trial at 0 and ignore accuracy, while
    here score + 2 tends to NDCG@10 per unit of compute. An infinite excess scores -2.
  - A trial whose policy.budget is below its own policy network's cost (compute.budget_share:
    e.g. the cnn body on 4 blocks costs 0.5 of the backbone) is not trained: no number of blocks
    can meet it. It scores INFEASIBLE (-3), below every trained trial, and is left out of the
    Pareto plot and the choice of the best.
Every trial records NDCG@10, mean executed blocks and MFLOPs; trials.md states the rule.

A search's work directory:
  keras_tuner/                       Keras Tuner's project (oracle.json, trial_<id>/trial.json)
  keras_tuner/trial_<id>/run/        the trial's run() work directory, with its checkpoints:
                                     a search started again resumes each unfinished trial
  keras_tuner/trial_<id>/runs.jsonl  one line per time a tuner process started the trial
  trials.md, trials.json             the table of trials
  pareto.png                         NDCG@10 against MFLOPs per request (policy included)
  best_config.json                   the best trial's config: `train.py --config=best_config.json`
  search_space.json                  the searched dimensions; a resumed search must match them
  best/trial_<id>/                   with --retrain_best: that config retrained (and exported)

Distributed search uses Keras Tuner's chief/worker mode: the same command in every process,
with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set in all and KERASTUNER_TUNER_ID=chief in
the one that runs the oracle (and writes the reports) and a distinct id in each worker.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time

import keras_tuner as kt

from tf_skiprec.compute import budget_share, flops_per_request
from tf_skiprec.config import Config
from tf_skiprec.errors import ConfigError
from tf_skiprec.tuning.space import Dimension, trial_config, within_limit
from tf_skiprec.training import run
from tf_skiprec.tuning.report import pareto, trials_table

OBJECTIVE = "score"
INFEASIBLE = -3.0   # a budget below the trial's own policy network's cost: not trained
OVER_LIMIT = -2.0   # over-limit scores are OVER_LIMIT + NDCG@10 / (1 + lambda excess): in [-2, -1],
                    # below every within-limit score (NDCG@10, in [0, 1])
TUNERS = ("random", "bayesian", "hyperband")


class SkipRecTuner(kt.engine.base_tuner.BaseTuner):
  """Runs each trial as `run(trial config, <trial dir>/run)`.

  Args:
    oracle: a keras_tuner Oracle whose objective is OBJECTIVE ("max").
    base_config: the config every trial starts from.
    space: the searched dimensions.
    limit_blocks, limit_mflops: the compute limits of the objective (<= 0: none).
  """

  def __init__(self, oracle, base_config: Config, space: list[Dimension], limit_blocks: float,
               limit_mflops: float, **kwargs):
    self.base_config = base_config
    self.space = space
    self.limit_blocks = limit_blocks
    self.limit_mflops = limit_mflops
    super().__init__(oracle, hypermodel=None, **kwargs)

  def run_trial(self, trial, *args, **kwargs) -> dict:
    del args, kwargs
    hp = trial.hyperparameters
    values = {d.key: hp.get(d.key) for d in self.space if d.key in hp.values}
    config = trial_config(self.base_config, values)
    config.name = f"{self.base_config.name}-trial{trial.trial_id}"
    config.export.base_dir = ""                         # only --retrain_best exports
    # No number of blocks meets a budget below the policy's own cost. Checked before Hyperband
    # copies an earlier round's run: an infeasible trial has none.
    share = budget_share(config)
    if config.train.mode != "pretrain" and config.policy.budget < share:
      logging.warning("Trial %s: policy.budget %.3f is below its policy network's own cost, %.3f "
                      "of the full backbone (policy.body %s, %d blocks): not trained, scored %g.",
                      trial.trial_id, config.policy.budget, share, config.policy.body,
                      config.model.num_blocks, INFEASIBLE)
      return {OBJECTIVE: INFEASIBLE, "valid_ndcg10": 0.0, "mean_blocks": 0.0, "mflops": 0.0}
    trial_dir = self.get_trial_dir(trial.trial_id)
    workdir = os.path.join(trial_dir, "run")
    continued = False
    if "tuner/epochs" in hp.values:                     # Hyperband: this round's epoch budget,
      config.train.epochs = int(hp.get("tuner/epochs"))  # continuing the previous round's run
      previous = hp.values.get("tuner/trial_id")
      continued = bool(previous)
      if previous and not os.path.exists(workdir):     # copied whole or not at all
        staging = workdir + ".copying"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(os.path.join(self.get_trial_dir(previous), "run"), staging)
        os.rename(staging, workdir)
    with open(os.path.join(trial_dir, "runs.jsonl"), "a") as f:
      f.write(json.dumps({"tuner_id": self.tuner_id, "pid": os.getpid(),
                          "started": time.time()}) + "\n")
    logging.info("Trial %s (%s): %s", trial.trial_id, self.tuner_id,
                 ", ".join(f"{k}={v}" for k, v in values.items()))
    result = run(config, workdir, continue_finished=continued)
    return trial_metrics(config, result, self.limit_blocks, self.limit_mflops)


def trial_metrics(config: Config, result: dict, limit_blocks: float, limit_mflops: float
                  ) -> dict:
  """run()'s result -> the numbers a trial reports: {score, valid_ndcg10, mean_blocks, mflops}.

  score is the objective (the module docstring gives the rule): NDCG@10 within the limits,
  OVER_LIMIT + NDCG@10 / (1 + lambda * relative excess) over them, lambda =
  config.policy.selection_lambda."""
  ndcg = float(result["valid"]["NDCG@10"])
  blocks = float(result["valid_blocks"]["mean"])
  mflops = flops_per_request(config, blocks, int(result["num_items"])) / 1e6
  ok, excess = within_limit(blocks, mflops, limit_blocks, limit_mflops)
  score = ndcg if ok else OVER_LIMIT + ndcg * _excess_factor(excess,
                                                             config.policy.selection_lambda)
  return {OBJECTIVE: score, "valid_ndcg10": ndcg, "mean_blocks": blocks, "mflops": mflops}


def _excess_factor(excess: float, lam: float) -> float:
  """1 / (1 + lam * excess), in [0, 1]: 0 for an infinite excess, 1 whenever lam is 0."""
  if lam == 0.0:
    return 1.0                                     # also for an infinite excess (0 * inf is nan)
  return 0.0 if math.isinf(excess) else 1.0 / (1.0 + lam * excess)


def objective_rule(limit_blocks: float, limit_mflops: float, lam: float) -> str:
  """The objective in words, for trials.md: the limits and lambda of this search."""
  limits = [f"{name} <= {value:g}" for name, value in
            (("mean_blocks", limit_blocks), ("mflops", limit_mflops)) if value > 0]
  infeasible = (f" A trial scored {INFEASIBLE:g} was not trained: its policy.budget is below "
                "its own policy network's cost.")
  if not limits:
    return "score: validation NDCG@10 (no compute limit)." + infeasible
  return (f"score: validation NDCG@10 within the limit ({' and '.join(limits)}); over it, "
          f"{OVER_LIMIT:g} + NDCG@10 / (1 + {lam:g} x relative excess), in [-2, -1]: every trial "
          f"within the limit ranks above every trial over it." + infeasible)


def make_oracle(kind: str, space: list[Dimension], max_trials: int, max_epochs: int,
                seed: int):
  """A keras_tuner oracle of `kind` over `space`, maximising OBJECTIVE."""
  hp = kt.HyperParameters()
  for dim in space:
    dim.declare(hp)
  objective = kt.Objective(OBJECTIVE, direction="max")
  common = {"objective": objective, "hyperparameters": hp, "tune_new_entries": False,
            "seed": seed, "max_retries_per_trial": 0, "max_consecutive_failed_trials": 3}
  if kind == "random":
    return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
  if kind == "bayesian":  # Keras Tuner's default of 3 random trials per dimension would leave
    initial = min(3 * len(space), max(2, max_trials // 3))  # a 10-trial search all random
    return kt.oracles.BayesianOptimizationOracle(max_trials=max_trials,
                                                 num_initial_points=initial, **common)
  if kind == "hyperband":
    return kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=3, hyperband_iterations=1,
                                      **common)
  raise ConfigError(f"--tuner={kind!r}: unknown. Fix: use one of {', '.join(TUNERS)}.")


def search(base_config: Config, workdir: str, space: list[Dimension], *, tuner: str = "random",
           max_trials: int = 10, max_epochs: int = 9, limit_blocks: float = 0.0,
           limit_mflops: float = 0.0, seed: int = 0, retrain_best: bool = False) -> dict | None:
  """Runs (or resumes) the search in `workdir`; returns the report, or None in a worker process
  of a distributed search (the chief writes it)."""
  _check(base_config, space)
  os.makedirs(workdir, exist_ok=True)
  _check_same_space(space, workdir)
  oracle = make_oracle(tuner, space, max_trials, max_epochs, seed)
  skiprec_tuner = SkipRecTuner(oracle, base_config, space, limit_blocks, limit_mflops,
                               directory=workdir, project_name="keras_tuner")
  skiprec_tuner.search()
  if kt.src.distribute.utils.has_chief_oracle() and \
      not kt.src.distribute.utils.is_chief_oracle():
    return None
  return report(skiprec_tuner, workdir, retrain_best)


def report(tuner: SkipRecTuner, workdir: str, retrain_best: bool) -> dict:
  """The table of trials, the Pareto plot, the best config file and, optionally, its retraining."""
  rows = []
  for trial in tuner.oracle.trials.values():
    row = {"trial": trial.trial_id, "status": trial.status,
           **{d.key: trial.hyperparameters.values.get(d.key) for d in tuner.space},
           "tuner/epochs": trial.hyperparameters.values.get("tuner/epochs")}
    for name in (OBJECTIVE, "valid_ndcg10", "mean_blocks", "mflops"):
      row[name] = (trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None)
    rows.append(row)
  rows.sort(key=lambda r: (len(r["trial"]), r["trial"]))              # "2" before "10"
  done = [r for r in rows if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None
          and math.isfinite(r[OBJECTIVE]) and r[OBJECTIVE] > INFEASIBLE]
  out = {"trials": rows, "table": os.path.join(workdir, "trials.md")}
  with open(out["table"], "w") as f:
    f.write(trials_table(rows, [d.key for d in tuner.space]) + "\n\n" +
            objective_rule(tuner.limit_blocks, tuner.limit_mflops,
                           tuner.base_config.policy.selection_lambda) + "\n")
  with open(os.path.join(workdir, "trials.json"), "w") as f:
    json.dump(rows, f, indent=2)
  if not done and rows and all(r[OBJECTIVE] == INFEASIBLE for r in rows):
    raise ConfigError(f"{workdir}: no trial was trained: every trial's policy.budget is below its "
                      "policy network's own cost (trials.md). Fix: a higher budget range, e.g. "
                      "--tune=policy.budget=0.6:1.0, more blocks, or --override policy.body=pool.")
  if not done:
    raise ConfigError(f"{workdir}: no trial finished; see keras_tuner/trial_*/trial.json for "
                      f"each trial's error.")
  # Against MFLOPs per request: what a request pays, the policy's own cost included (a cheap
  # policy body moves a trial left at the same blocks).
  out["pareto"] = pareto([(r["mflops"], r["valid_ndcg10"], r["trial"]) for r in done],
                         os.path.join(workdir, "pareto.png"), limit=tuner.limit_mflops or None)
  best = max(done, key=lambda r: r[OBJECTIVE])
  best_config = trial_config(tuner.base_config, {d.key: best[d.key] for d in tuner.space
                                                 if best[d.key] is not None})
  if best.get("tuner/epochs"):                      # Hyperband: the winner's epoch budget
    best_config.train.epochs = int(best["tuner/epochs"])
  best_config.name = f"{tuner.base_config.name}-best"
  out["best_trial"], out["best_config"] = best, os.path.join(workdir, "best_config.json")
  with open(out["best_config"], "w") as f:
    f.write(best_config.to_json() + "\n")
  if retrain_best:
    out["retrained"] = run(copy.deepcopy(best_config),
                           os.path.join(workdir, "best", f"trial_{best['trial']}"))
  return out


def _check_same_space(space: list[Dimension], workdir: str) -> None:
  """Writes the searched dimensions on the first start; a resumed search must search the same
  (Keras Tuner would carry on with the saved space while the reports used the new one)."""
  path = os.path.join(workdir, "search_space.json")
  mine = [dataclasses.asdict(d) for d in space]
  if not os.path.exists(path):
    with open(path, "w") as f:
      json.dump(mine, f, indent=2)
    return
  with open(path) as f:
    saved = json.load(f)
  if json.loads(json.dumps(mine)) != saved:
    raise ConfigError(
        f"{path}: this search was started with other dimensions ({_describe(saved)}), not "
        f"({'; '.join(d.describe() for d in space)}). Fix: resume with the same --tune and "
        f"--override flags, or start a new search in another --workdir.")


def _describe(saved: list[dict]) -> str:
  return "; ".join(Dimension(**{**d, "choices": tuple(d["choices"])}).describe() for d in saved)


def _check(config: Config, space: list[Dimension]) -> None:
  """SkipRec trials need a backbone to start from; depth/width trials cannot share one."""
  modes = next((d.choices for d in space if d.key == "train.mode"), (config.train.mode,))
  if any(m != "pretrain" for m in modes) and config.train.pretrain_epochs <= 0:
    architecture = [d.key for d in space if d.key.startswith("model.")]
    if not config.train.init_from or architecture:
      raise ConfigError(
          "--mode=tune: gumbel/rl trials start from a pretrained backbone. Fix: "
          "--override=train.pretrain_epochs=N (each trial pretrains its own), or "
          "--override=train.init_from=DIR with no model.* dimension searched.")
