"""`run(config, workdir) -> dict`: the one entry point for training and evaluation.

The CLI (train.py), the tests and the tuner all call it. Modes (train.mode): "pretrain" trains
the backbone alone; "gumbel" and "rl" train SkipRec's policy jointly with the backbone, starting
from `train.init_from` (a pretrain work directory) or, with `train.pretrain_epochs` > 0, from a
pretrain stage run first in `workdir/pretrain`.

A run started again in the same work directory resumes from the latest checkpoint, mid-epoch
included (the shuffle order depends only on the seed and the epoch, so done batches are skipped).

Work directory layout:
  config.json     the resolved config
  id_map.json     the item id map (also beside each checkpoint directory)
  checkpoints/    latest checkpoints (model, optimisers, run state)
  best/           the best model on validation (NDCG@10; for gumbel, within the budget)
  tensorboard/    summaries
  pretrain/       the pretrain stage's own work directory, when there is one
  *.png           SkipRec only: usage_by_block.png, accuracy_vs_blocks.png
  metrics.json    the final result

With `export.base_dir` set, the best model is then exported for TF Serving to
<export.base_dir>/<export.model_name>/<version>/ (tf_skiprec/export.py).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_skiprec.config import Config
from tf_skiprec.data.pipeline import Pipelines, train_windows_used
from tf_skiprec.data.sources import load_interactions
from tf_skiprec.data.splits import build_sequences, eval_windows, train_windows
from tf_skiprec.errors import ConfigError, TrainingError
from tf_skiprec.export import export_model
from tf_skiprec.training import builders, cluster, plots
from tf_skiprec.training.evaluate import evaluate
from tf_skiprec.training.state import Checkpoints, RunState, checkpoint_paths
from tf_skiprec.training.steps import make_eval_step, make_train_step

SELECT_METRIC = "NDCG@10"
SWEEP_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_MUST_MATCH = ("data", "model", "policy")  # config sections a resumed work directory must share


def run(config: Config, workdir: str) -> dict:
  """Trains (or resumes) and evaluates; returns the result, also written to metrics.json."""
  mode, train = config.train.mode, config.train
  strategy = cluster.make_strategy(train.strategy)  # first: multi-worker collectives need it so
  chief = cluster.is_chief(strategy)
  os.makedirs(workdir, exist_ok=True)
  _check_or_write_config(config, workdir, write=chief)
  pretrain_result, init_from = None, train.init_from
  if mode != "pretrain" and not init_from and train.pretrain_epochs > 0:
    stage = copy.deepcopy(config)
    stage.train.mode, stage.train.epochs = "pretrain", train.pretrain_epochs
    stage.train.learning_rate = train.pretrain_learning_rate or train.learning_rate
    stage.train.patience = train.pretrain_patience or train.patience
    stage.export.base_dir = ""  # only the finished model is exported
    init_from = os.path.join(workdir, "pretrain")
    logging.info("Pretraining the backbone for up to %d epochs in %s.", train.pretrain_epochs,
                 init_from)
    pretrain_result = run(stage, init_from)

  keras.utils.set_random_seed(train.seed)
  max_len = config.data.max_len
  data = build_sequences(load_interactions(config.data), config.data.min_interactions)
  windows = train_windows(data, max_len)
  valid_w, test_w = (eval_windows(data, s, max_len) for s in ("valid", "test"))
  pipelines = Pipelines(data, max_len)
  logging.info("Data: %d users (%d dropped, < %d interactions), %d items, %d interactions, "
               "%d training windows.", data.num_users, data.dropped_users,
               config.data.min_interactions, data.id_map.num_items, int(data.items.shape[0]),
               len(windows))
  for directory in ("", "checkpoints", "best") if chief else ():
    os.makedirs(os.path.join(workdir, directory), exist_ok=True)
    data.id_map.save(os.path.join(workdir, directory, "id_map.json"))

  with strategy.scope():
    model = builders.build_model(config, data.id_map.vocab_size)
    optimizers = builders.make_optimizers(model, train, config.policy.learning_rate)
    state = RunState()
  ckpts = Checkpoints(workdir, model=model, optimizers=optimizers, state=state,
                      max_to_keep=train.max_checkpoints,
                      scratch=cluster.scratch_dir(workdir, strategy))
  resumed_from = ckpts.restore_latest()
  cluster.check_same(strategy, resumed_from, "checkpoints", workdir)
  if not resumed_from and state.epoch.numpy() == 0 and mode != "pretrain" and init_from:
    builders.load_pretrained_backbone(model, init_from)
  if (state.finished.numpy() and state.epoch.numpy() < train.epochs
      and state.bad_epochs.numpy() < train.patience):
    # Stopped at its epoch budget, resumed with a larger one (e.g. a Hyperband round): go on.
    logging.info("Continuing a finished run from epoch %d to %d.", int(state.epoch.numpy()),
                 train.epochs)
    state.finished.assign(0)

  eval_strategy = cluster.evaluation_strategy(strategy)
  eval_model = cluster.local_copy(
      strategy, model, lambda: builders.build_model(config, data.id_map.vocab_size))
  eval_step = make_eval_step(eval_model, eval_strategy)

  def evaluate_split(w):
    cluster.copy_variables(model, eval_model)  # multi-worker: every worker, the same moment
    return evaluate(eval_step, pipelines.evaluation(w, train.eval_batch_size), eval_strategy,
                    data.user_kinds)

  steps = {}  # one traced step per training mode used (rl may warm up with gumbel)
  writer = (tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if chief
            else tf.summary.create_noop_writer())
  replicas = strategy.num_replicas_in_sync
  trained = train_windows_used(len(windows), train.batch_size, replicas)
  if trained < len(windows):
    logging.info("Each epoch leaves out its last %d window(s): a batch of %d cannot be split "
                 "across %d replicas.", len(windows) - trained, len(windows) - trained, replicas)
  steps_per_epoch = math.ceil(trained / train.batch_size)
  seen_sequences, train_seconds = 0, 0.0

  while not state.finished.numpy() and state.epoch.numpy() < train.epochs:
    epoch, done = int(state.epoch.numpy()), int(state.epoch_step.numpy())
    epoch_mode = "gumbel" if mode == "rl" and epoch < config.policy.warmup_epochs else mode
    frozen = mode != "pretrain" and epoch < config.policy.freeze_backbone_epochs
    if (epoch_mode, frozen) not in steps:
      used = ({"backbone": optimizers["backbone"]} if epoch_mode == "pretrain" else
              {"policy": optimizers["policy"]} if frozen else optimizers)
      steps[epoch_mode, frozen] = make_train_step(model, used, strategy, train.clipnorm,
                                                  epoch_mode)
    dataset = pipelines.train(windows, train.batch_size, seed=train.seed, epoch=epoch,
                              replicas=replicas,
                              skip_batches=done)
    bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["seq/s", "tau"],
                              verbose=1 if train.progress else 0)
    tick = epoch_start = time.perf_counter()
    epoch_seqs, sums = 0, {}
    for batch in strategy.experimental_distribute_dataset(dataset):
      step = int(state.step.numpy())
      shown = []
      if mode != "pretrain":
        tau = builders.temperature(step, config.policy)
        model.temperature.assign(tau)
        model.budget.assign(builders.budget(step, config.policy))
        model.entropy_weight.assign(builders.entropy_weight(step, config.policy))
        shown.append(("tau", tau))
      seed = tf.constant([train.seed, step], tf.int64)
      out = {k: float(v.numpy()) for k, v in steps[epoch_mode, frozen](batch, seed).items()}
      _check_finite(out, state, ckpts)
      if epoch_mode == "gumbel" and config.policy.cost == "lagrangian":
        model.multiplier.assign(builders.multiplier(
            float(model.multiplier.numpy()), out["usage"], float(model.budget.numpy()),
            config.policy))
        out["multiplier"] = float(model.multiplier.numpy())
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + v
      state.step.assign_add(1)
      state.epoch_step.assign_add(1)
      epoch_seqs += train.batch_size
      rate = epoch_seqs / max(time.perf_counter() - epoch_start, 1e-9)
      bar.update(int(state.epoch_step.numpy()), list(out.items()) + shown + [("seq/s", rate)])
      if (step + 1) % 10 == 0:
        with writer.as_default(step=step + 1):
          for k, v in out.items():
            tf.summary.scalar(f"train/{k}", v)
      if train.checkpoint_every_steps and (step + 1) % train.checkpoint_every_steps == 0:
        tick = _account(state, tick)
        ckpts.save_latest()
    tick = _account(state, tick)
    epoch_time = time.perf_counter() - epoch_start
    seen_sequences += epoch_seqs
    train_seconds += epoch_time
    means = {k: v / max(int(state.epoch_step.numpy()) - done, 1) for k, v in sums.items()}

    valid = evaluate_split(valid_w)
    score = cluster.agree(strategy, selection_score(valid, config))  # one decision for all
    improved = score > float(state.best_score.numpy())
    if improved:
      state.best_score.assign(score)
      state.best_epoch.assign(epoch)
      state.best_elapsed.assign(state.elapsed)
      state.bad_epochs.assign(0)
      ckpts.save_best()
    else:
      state.bad_epochs.assign_add(1)
    logging.info("epoch %d/%d [%s%s]  loss %.4f  valid %s %.4f  HR@10 %.4f  blocks %.1f/%d%s  %.1fs",
                 epoch + 1, train.epochs, epoch_mode, ", frozen backbone" if frozen else "",
                 means.get("loss", float("nan")),
                 SELECT_METRIC, valid["metrics"][SELECT_METRIC], valid["metrics"]["HR@10"],
                 valid["blocks"]["mean"], valid["blocks"]["num_blocks"],
                 "  (best)" if improved else "", epoch_time)
    with writer.as_default(step=int(state.step.numpy())):
      for k, v in means.items():
        tf.summary.scalar(f"train/epoch_{k}", v)
      for k, v in valid["metrics"].items():
        tf.summary.scalar(f"valid/{k}", v)
      tf.summary.scalar("valid/mean_blocks", valid["blocks"]["mean"])
    state.epoch.assign_add(1)
    state.epoch_step.assign(0)
    if state.bad_epochs.numpy() >= train.patience or state.epoch.numpy() >= train.epochs:
      state.finished.assign(1)
    ckpts.save_latest()

  if state.finished.numpy() == 0:  # epochs already reached when resumed with a smaller budget
    state.finished.assign(1)
    ckpts.save_latest()
  cluster.barrier(strategy)  # the chief's best checkpoint is on disk
  ckpts.restore_best()
  results = {"mode": mode}
  for split, w in (("valid", valid_w), ("test", test_w)):
    out = evaluate_split(w)
    results[split], results[f"{split}_by_kind"] = out["metrics"], out["by_kind"]
    results[f"{split}_blocks"] = out["blocks"]
  if mode != "pretrain":
    results.update(_skiprec_reports(model, config, workdir, evaluate_split, valid_w, results,
                                    plot=chief))
  results.update({
      "best_epoch": int(state.best_epoch.numpy()) + 1,
      "epochs_run": int(state.epoch.numpy()),
      "steps": int(state.step.numpy()),
      "resumed_from_step": resumed_from,
      "train_seconds": float(state.elapsed.numpy()),
      "seconds_to_best": float(state.best_elapsed.numpy()),
      "sequences_per_second": seen_sequences / train_seconds if train_seconds else None,
      "num_params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
      "num_users": data.num_users, "num_items": data.id_map.num_items,
      "dropped_users": data.dropped_users, "workdir": workdir, "init_from": init_from or None,
      "pretrain": _summary(pretrain_result),
  })
  cluster.copy_variables(model, eval_model)  # the sweep left another threshold there
  if config.export.base_dir and chief:
    histories = next(iter(pipelines.evaluation(valid_w, config.export.num_check_histories)))
    results["export"] = export_model(
        eval_model, data.id_map, base_dir=config.export.base_dir,
        model_name=config.export.model_name, max_len=max_len,
        sample_histories=histories["history"].numpy(), top_k=config.export.top_k)
  if chief:
    _write_json(results, os.path.join(workdir, "metrics.json"))
  cluster.barrier(strategy)  # the other workers may read what the chief wrote (a pretrain stage)
  return results


def selection_score(valid: dict, config: Config) -> float:
  """What early stopping maximises: validation NDCG@10; for gumbel, epochs whose validation usage
  is within policy.budget + policy.budget_slack rank above all others, and those over it rank by
  lower usage."""
  ndcg = valid["metrics"][SELECT_METRIC]
  if config.train.mode != "gumbel":
    return ndcg
  usage = valid["blocks"]["usage"]
  return ndcg if usage <= config.policy.budget + config.policy.budget_slack else -1.0 - usage


def _skiprec_reports(model, config, workdir, evaluate_split, valid_w, results, *,
                     plot: bool = True) -> dict:
  """Threshold sweep on validation, and (with `plot`) the two plots."""
  sweep = []
  for t in SWEEP_THRESHOLDS:
    model.threshold.assign(t)
    out = evaluate_split(valid_w)
    sweep.append({"threshold": t, "mean_blocks": out["blocks"]["mean"], **out["metrics"]})
  model.threshold.assign(config.policy.threshold)
  full = next(p for p in sweep if p["threshold"] == 0.0)  # P(keep) >= 0: every block
  if not plot:
    return {"threshold_sweep": sweep}
  png = {
      "usage_by_block": plots.usage_by_block(results["valid_blocks"]["block_usage"],
                                             os.path.join(workdir, "usage_by_block.png")),
      "accuracy_vs_blocks": plots.accuracy_vs_blocks(
          [p for p in sweep if p["threshold"] > 0], full,
          os.path.join(workdir, "accuracy_vs_blocks.png")),
  }
  return {"threshold_sweep": sweep, "plots": png}


def _summary(result: dict | None) -> dict | None:
  if result is None:
    return None
  return {k: result[k] for k in ("valid", "test", "best_epoch", "train_seconds", "workdir")}


def _account(state: RunState, tick: float) -> float:
  """Adds the training seconds since `tick` to state.elapsed; returns the new tick."""
  now = time.perf_counter()
  state.elapsed.assign_add(now - tick)
  return now


def _check_finite(out: dict, state: RunState, ckpts: Checkpoints) -> None:
  """Stops the run at a non-finite loss or gradient, before anything is saved.

  The step's update has been applied to the weights in memory, which are therefore discarded:
  the checkpoints on disk all predate it.
  """
  bad = {k: v for k, v in out.items() if k in ("loss", "grad_norm") and not math.isfinite(v)}
  if not bad:
    return
  step = int(state.step.numpy()) + 1
  kept = [os.path.basename(p) for p in checkpoint_paths(ckpts.latest_dir)]
  raise TrainingError(
      f"step {step} (epoch {int(state.epoch.numpy()) + 1}, batch "
      f"{int(state.epoch_step.numpy()) + 1}): the training "
      + " and ".join(f"{k} is {v}" for k, v in bad.items())
      + f"; the run stopped without saving this step (checkpoints kept in {ckpts.latest_dir}: "
      f"{', '.join(kept) or 'none'}). Their weights are finite, but the newest may already be "
      "diverging if it is only a step or two before this one. Fix: lower train.learning_rate or "
      "set train.clipnorm (e.g. --override train.clipnorm=1.0), check the data, and run the "
      "same command to resume; if it fails again right after resuming, delete the newest "
      "ckpt-<step>.* files so that it resumes from the one before (or use a new --workdir).")


def _write_json(value: dict, path: str) -> None:
  """Writes JSON atomically (a temporary file renamed over `path`)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def _check_or_write_config(config: Config, workdir: str, *, write: bool = True) -> None:
  """Writes config.json (if `write`), or checks that a resumed work directory was trained on the
  same setup."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    current = json.loads(config.to_json())  # tuples become lists, as in the file
    # A field added since the work directory was written counts as its default there.
    previous = _with_defaults(previous, json.loads(Config().to_json()))
    for section in _MUST_MATCH:
      if previous.get(section) != current[section]:
        before = previous.get(section) or {}
        diff = sorted(k for k in set(before) | set(current[section])
                      if before.get(k) != current[section].get(k))
        raise ConfigError(
            f"{path}: this work directory holds a run with a different {section} config "
            f"(fields {diff}). Fix: use a new --workdir, or the same config to resume.")
  if write:
    _write_json(json.loads(config.to_json()), path)


def _with_defaults(values: dict, defaults: dict) -> dict:
  """values with every field missing from it (at any depth) taken from defaults."""
  out = dict(defaults)
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(defaults.get(key), dict):
      out[key] = _with_defaults(value, defaults[key])
    else:
      out[key] = value
  return out
