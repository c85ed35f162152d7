"""`run(config, workdir) -> dict`: the one entry point for training and evaluation.

The CLI (train.py), the tests and the tuner all call it. A run started again in the same work
directory resumes from the latest checkpoint, mid-epoch included (the shuffle order depends only on
the seed and the epoch, so the done batches are skipped exactly).

Work directory layout:
  config.json     the resolved config
  id_map.json     the item id map (also beside each checkpoint directory)
  checkpoints/    latest checkpoints (model, optimiser, run state)
  best/           the best model on validation NDCG@10
  tensorboard/    summaries
  metrics.json    the final result
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_skiprec.config import Config
from tf_skiprec.data.pipeline import Pipelines
from tf_skiprec.data.sources import load_interactions
from tf_skiprec.data.splits import build_sequences, eval_windows, train_windows
from tf_skiprec.errors import ConfigError
from tf_skiprec.model import NextItNetModel
from tf_skiprec.training.evaluate import evaluate
from tf_skiprec.training.state import Checkpoints, RunState
from tf_skiprec.training.steps import make_eval_step, make_train_step

SELECT_METRIC = "NDCG@10"
# Sections of the config that must match to resume a work directory.
_MUST_MATCH = ("data", "model")


def run(config: Config, workdir: str) -> dict:
  """Trains (or resumes) and evaluates; returns the result, also written to metrics.json."""
  os.makedirs(workdir, exist_ok=True)
  _check_or_write_config(config, workdir)
  keras.utils.set_random_seed(config.train.seed)
  strategy = make_strategy(config.train.strategy)
  max_len = config.data.max_len

  data = build_sequences(load_interactions(config.data), config.data.min_interactions)
  windows = train_windows(data, max_len)
  valid_w, test_w = (eval_windows(data, s, max_len) for s in ("valid", "test"))
  pipelines = Pipelines(data, max_len)
  logging.info("Data: %d users (%d dropped, < %d interactions), %d items, %d interactions, "
               "%d training windows.", data.num_users, data.dropped_users,
               config.data.min_interactions, data.id_map.num_items, len(data.items), len(windows))
  for directory in ("", "checkpoints", "best"):
    os.makedirs(os.path.join(workdir, directory), exist_ok=True)
    data.id_map.save(os.path.join(workdir, directory, "id_map.json"))

  with strategy.scope():
    model = NextItNetModel.from_config_dataclass(
        config.model, data.id_map.vocab_size, loss=config.train.loss,
        num_sampled=config.train.num_sampled)
    model.score(tf.zeros([1, max_len], tf.int32))  # builds every variable
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    state = RunState()
  ckpts = Checkpoints(workdir, model=model, optimizers={"optimizer": optimizer}, state=state,
                      max_to_keep=config.train.max_checkpoints)
  resumed_from = ckpts.restore_latest()
  train_step = make_train_step(model, optimizer, strategy, config.train.clipnorm)
  eval_step = make_eval_step(model, strategy)
  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
  batch_size = config.train.batch_size
  steps_per_epoch = math.ceil(len(windows) / batch_size)
  seen_sequences, train_seconds = 0, 0.0

  while not state.finished.numpy() and state.epoch.numpy() < config.train.epochs:
    epoch, done = int(state.epoch.numpy()), int(state.epoch_step.numpy())
    dataset = pipelines.train(windows, batch_size, seed=config.train.seed, epoch=epoch,
                              skip_batches=done)
    bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["seq/s"],
                              verbose=1 if config.train.progress else 0)
    tick = time.perf_counter()
    epoch_start, epoch_seqs, loss_sum, batches = tick, 0, 0.0, 0
    for batch in strategy.experimental_distribute_dataset(dataset):
      loss = float(train_step(batch)["loss"].numpy())
      loss_sum, batches = loss_sum + loss, batches + 1
      state.step.assign_add(1)
      state.epoch_step.assign_add(1)
      epoch_seqs += batch_size
      rate = epoch_seqs / max(time.perf_counter() - epoch_start, 1e-9)
      bar.update(int(state.epoch_step.numpy()), [("loss", loss), ("seq/s", rate)])
      step = int(state.step.numpy())
      if step % 10 == 0:
        with writer.as_default(step=step):
          tf.summary.scalar("train/loss", loss)
      every = config.train.checkpoint_every_steps
      if every and step % every == 0:
        tick = _account(state, tick)
        ckpts.save_latest()
    tick = _account(state, tick)
    epoch_time = time.perf_counter() - epoch_start
    seen_sequences += epoch_seqs
    train_seconds += epoch_time

    valid = evaluate(eval_step, pipelines.evaluation(valid_w, config.train.eval_batch_size),
                     strategy, data.user_kinds)["metrics"]
    score = valid[SELECT_METRIC]
    improved = score > float(state.best_score.numpy())
    if improved:
      state.best_score.assign(score)
      state.best_epoch.assign(epoch)
      state.best_elapsed.assign(state.elapsed)
      state.bad_epochs.assign(0)
      ckpts.save_best()
    else:
      state.bad_epochs.assign_add(1)
    logging.info("epoch %d/%d  loss %.4f  valid %s %.4f  HR@10 %.4f%s  %.1fs", epoch + 1,
                 config.train.epochs, loss_sum / max(batches, 1), SELECT_METRIC, score, valid["HR@10"],
                 "  (best)" if improved else "", epoch_time)
    with writer.as_default(step=int(state.step.numpy())):
      tf.summary.scalar("train/epoch_loss", loss_sum / max(batches, 1))
      for name, value in valid.items():
        tf.summary.scalar(f"valid/{name}", value)
    state.epoch.assign_add(1)
    state.epoch_step.assign(0)
    if (state.bad_epochs.numpy() >= config.train.patience
        or state.epoch.numpy() >= config.train.epochs):
      state.finished.assign(1)
    ckpts.save_latest()

  if state.finished.numpy() == 0:  # epochs already reached when resumed with a smaller budget
    state.finished.assign(1)
    ckpts.save_latest()
  ckpts.restore_best()
  results = {}
  for split, w in (("valid", valid_w), ("test", test_w)):
    out = evaluate(eval_step, pipelines.evaluation(w, config.train.eval_batch_size), strategy,
                   data.user_kinds)
    results[split], results[f"{split}_by_kind"] = out["metrics"], out["by_kind"]
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
      "dropped_users": data.dropped_users, "workdir": workdir,
  })
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def _account(state: RunState, tick: float) -> float:
  """Adds the training seconds since `tick` to state.elapsed; returns the new tick."""
  now = time.perf_counter()
  state.elapsed.assign_add(now - tick)
  return now


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  raise ConfigError(f"train.strategy={name!r}: unknown. Fix: use 'default' or 'mirrored'.")


def make_optimizer(train) -> keras.optimizers.Optimizer:
  """Adam, or AdamW (decoupled weight decay, not on norms, biases or ReZero alphas)."""
  if train.weight_decay:
    opt = keras.optimizers.AdamW(learning_rate=train.learning_rate,
                                 weight_decay=train.weight_decay)
    opt.exclude_from_weight_decay(var_names=["norm", "bias", "alpha"])
    return opt
  return keras.optimizers.Adam(learning_rate=train.learning_rate)


def _check_or_write_config(config: Config, workdir: str) -> None:
  """Writes config.json, or checks that a resumed work directory was trained on the same setup."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    current = json.loads(config.to_json())  # tuples become lists, as in the file
    for section in _MUST_MATCH:
      if previous.get(section) != current[section]:
        diff = sorted(k for k in current[section]
                      if previous.get(section, {}).get(k) != current[section][k])
        raise ConfigError(
            f"{path}: this work directory holds a run with a different {section} config "
            f"(fields {diff}). Fix: use a new --workdir, or the same config to resume.")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json())
  os.replace(tmp, path)
