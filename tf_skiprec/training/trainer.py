"""The trainer of one stage of a run (pretrain, or SkipRec): an eager begin, a traced loop of steps
and an eager end, epoch after epoch, as Orbit's StandardTrainer splits them.

  begin_epoch   (eager)  the epoch's mode (rl may warm up with gumbel; frozen-backbone epochs
                         train the policy alone), its shuffled batches, resumed mid-epoch where a
                         checkpoint left it, and its progress bar
  train_loop    (traced) `runtime.steps_per_loop` steps in one tf.function call
                         (steps.make_train_loop): one host sync per loop
  end_loop      (eager)  a non-finite loss stops the run, the progress bar and the TensorBoard
                         scalars update, a checkpoint every `train.checkpoint_every_steps`
  end_epoch     (eager)  validation, model selection (selection.py), the best and latest
                         checkpoints, early stopping, the epoch's summaries

With train.ema_decay, each step also moves the weights' average (averaging.py), and end_epoch
validates and saves as the best model the averaged weights; the latest checkpoint keeps the
training weights and their averages.

Before training, `restore` restores the latest checkpoint (or the pretrained backbone of
`train.init_from`), and `claim` writes the work directory's config and id map. A loop ends early
at the end of an epoch and at a checkpoint step, so every checkpoint is where it was with one
step per loop, and results do not depend on `runtime.steps_per_loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_skiprec.config import Config
from tf_skiprec.data.pipeline import train_windows_used
from tf_skiprec.data.run_data import RunData
from tf_skiprec.errors import TrainingError
from tf_skiprec.training import builders, cluster, grow, workdir as workdir_lib
from tf_skiprec.training.averaging import WeightAverage
from tf_skiprec.training.evaluate import Evaluator
from tf_skiprec.training.selection import SELECT_METRIC, improves, selection_score
from tf_skiprec.training.state import Checkpoints, RunState, checkpoint_paths
from tf_skiprec.training.steps import LOSS_KEYS, make_train_loop


@dataclasses.dataclass
class _Epoch:
  """What begin_epoch prepares and the loops of the epoch share."""
  index: int
  mode: str
  frozen: bool
  batches: tf.data.Dataset | object  # the epoch's batches left; their iterator once started
  loop: Callable
  bar: keras.utils.Progbar
  first_step: int                 # epoch_step when the epoch (re)started: batches already done
  start: float                    # perf_counter at the start
  tick: float                     # since when training time is not yet in state.elapsed
  sequences: int = 0
  sums: dict = dataclasses.field(default_factory=dict)


class Trainer:
  """Trains `config`'s model on `data` in `workdir` under `strategy`.

  Attributes:
    model, optimizers, state: the model, its optimisers ({group: optimiser}) and the RunState.
    average: the trainable weights' moving average (train.ema_decay > 0), else None.
    checkpoints: the latest and best checkpoints of the work directory.
    evaluate: an Evaluator: evaluate(windows, threshold, max_blocks) -> evaluation result.
    resumed_from: the step the latest checkpoint restored (0 when none).
  """

  def __init__(self, config: Config, workdir: str, data: RunData,
               strategy: tf.distribute.Strategy):
    self.config, self.workdir, self.data, self.strategy = config, workdir, data, strategy
    self.chief = cluster.is_chief(strategy)
    self.mode = config.train.mode
    with strategy.scope():
      self.model = builders.build_model(config, data.vocab_size)
      self.optimizers = builders.make_optimizers(self.model, config.train,
                                                 config.policy.learning_rate)
      self.state = RunState()
      self.average = (WeightAverage([v for vs in self.model.variable_groups().values() for v in vs],
                                    config.train.ema_decay, strategy)
                      if config.train.ema_decay else None)
    self.checkpoints = Checkpoints(workdir, model=self.model, optimizers=self.optimizers,
                                   state=self.state, average=self.average,
                                   max_to_keep=config.train.max_checkpoints,
                                   scratch=cluster.scratch_dir(workdir, strategy))
    self.resumed_from = 0
    self.evaluate: Evaluator | None = None
    self.writer = tf.summary.create_noop_writer()
    self.seen_sequences, self.train_seconds = 0, 0.0
    self._loops: dict[tuple[str, bool], Callable] = {}
    replicas = strategy.num_replicas_in_sync
    trained = train_windows_used(len(data.train), config.train.batch_size, replicas)
    if trained < len(data.train):
      logging.info("Each epoch leaves out its last %d window(s): a batch of %d cannot be split "
                   "across %d replicas.", len(data.train) - trained, len(data.train) - trained,
                   replicas)
    self.steps_per_epoch = math.ceil(trained / config.train.batch_size)

  # ----------------------------------------------------------------------------------------------
  # Before training.

  def restore(self, init_from: str | None, continue_finished: bool = False) -> None:
    """The latest checkpoint, else (a SkipRec stage's start) the pretrained backbone of
    `init_from`, else the backbone grown from `train.grow_from`'s shallower one. A run that has
    finished stays finished unless `continue_finished` and it stopped at its epoch budget (not
    early), which has since been raised."""
    train, state = self.config.train, self.state
    self.resumed_from = self.checkpoints.restore_latest()
    cluster.check_same(self.strategy, self.resumed_from, "checkpoints", self.workdir)
    if not self.resumed_from and state.epoch.numpy() == 0:
      if self.mode != "pretrain" and init_from:
        builders.load_pretrained_backbone(self.model, init_from)
      elif train.grow_from:
        grow.grow_backbone(self.model, train.grow_from, self.config, self.data.id_map)
      if self.average is not None:
        self.average.reset()  # the average starts at the weights the stage starts from
    if (state.finished.numpy() and state.epoch.numpy() < train.epochs
        and state.bad_epochs.numpy() < train.patience):
      if continue_finished:  # e.g. a Hyperband round continuing the previous round's run
        logging.info("Continuing a finished run from epoch %d to %d.", int(state.epoch.numpy()),
                     train.epochs)
        state.finished.assign(0)
      else:
        logging.info("This run finished at epoch %d; train.epochs is now %d. To train on, "
                     "continue it (train.py --continue_finished; run(..., "
                     "continue_finished=True)).", int(state.epoch.numpy()), train.epochs)
    self.evaluate = Evaluator(
        self.model, lambda: builders.build_model(self.config, self.data.vocab_size), self.data,
        self.strategy, train.eval_batch_size)

  def claim(self) -> None:
    """Writes the work directory's config and id maps, and opens its TensorBoard writer (the
    chief only); everything before the first step has worked."""
    if self.chief:
      workdir_lib.claim(self.config, self.workdir, self.data.id_map)
      self.writer = tf.summary.create_file_writer(os.path.join(self.workdir, "tensorboard"))

  # ----------------------------------------------------------------------------------------------
  # Training.

  def train(self) -> None:
    """Epochs until the epoch budget or early stopping; then the run is marked finished."""
    state = self.state
    while not state.finished.numpy() and state.epoch.numpy() < self.config.train.epochs:
      epoch = self.begin_epoch()
      while int(state.epoch_step.numpy()) < self.steps_per_epoch:
        self.end_loop(epoch, self.train_loop(epoch))
      self.end_epoch(epoch)
    if state.finished.numpy() == 0:  # epochs already reached when resumed with a smaller budget
      state.finished.assign(1)
      self.checkpoints.save_latest()

  def begin_epoch(self) -> _Epoch:
    """The epoch's mode, batches (after the ones a checkpoint says are done) and progress bar."""
    train, policy = self.config.train, self.config.policy
    index, done = int(self.state.epoch.numpy()), int(self.state.epoch_step.numpy())
    mode = "gumbel" if self.mode == "rl" and index < policy.warmup_epochs else self.mode
    frozen = self.mode != "pretrain" and index < policy.freeze_backbone_epochs
    if (mode, frozen) not in self._loops:
      used = ({"backbone": self.optimizers["backbone"]} if mode == "pretrain" else
              {"policy": self.optimizers["policy"]} if frozen else self.optimizers)
      self._loops[mode, frozen] = make_train_loop(self.model, used, self.strategy,
                                                  self.state.step, train.seed, train.clipnorm,
                                                  mode, self.average)
    batches = self.data.pipelines.train(
        self.data.train, train.batch_size, seed=train.seed, epoch=index,
        replicas=self.strategy.num_replicas_in_sync, skip_batches=done,
        budget_over=policy.budget_over if mode == "gumbel" else "windows")
    bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["seq/s", "tau"],
                              verbose=1 if self.config.runtime.progress else 0)
    now = time.perf_counter()
    return _Epoch(index=index, mode=mode, frozen=frozen, batches=batches,
                  loop=self._loops[mode, frozen], bar=bar, first_step=done, start=now, tick=now)

  def train_loop(self, epoch: _Epoch) -> dict:
    """Runs the next loop of steps (traced) on the epoch's batches; returns its outputs as numpy
    values."""
    if isinstance(epoch.batches, tf.data.Dataset):  # its iterator from the first loop on
      epoch.batches = iter(self.strategy.experimental_distribute_dataset(epoch.batches))
    size = tf.constant(self._loop_size(), tf.int64)
    return tf.nest.map_structure(lambda t: t.numpy(), epoch.loop(epoch.batches, size))

  def _loop_size(self) -> int:
    """runtime.steps_per_loop, fewer to stop at the end of the epoch and at a checkpoint step."""
    step, every = int(self.state.step.numpy()), self.config.train.checkpoint_every_steps
    left = self.steps_per_epoch - int(self.state.epoch_step.numpy())
    size = min(self.config.runtime.steps_per_loop, left)
    return min(size, every - step % every) if every else size

  def end_loop(self, epoch: _Epoch, out: dict) -> None:
    """Stops at a non-finite loss; progress bar, TensorBoard scalars, step checkpoints."""
    state, train = self.state, self.config.train
    steps = int(out["steps"])
    first = int(state.step.numpy()) - steps        # the loop's first global step (0-based)
    if out["bad_step"] >= 0:
      self._stop_on_non_finite(first + int(out["bad_step"]),
                               int(state.epoch_step.numpy()) + int(out["bad_step"]), epoch,
                               {k: float(out["bad"][k]) for k in LOSS_KEYS})
    state.epoch_step.assign_add(steps)
    means = {k: float(v) for k, v in out["means"].items()}
    for k, v in means.items():
      epoch.sums[k] = epoch.sums.get(k, 0.0) + v * steps
    epoch.sequences += train.batch_size * steps
    rate = epoch.sequences / max(time.perf_counter() - epoch.start, 1e-9)
    epoch.bar.update(int(state.epoch_step.numpy()), list(means.items()) + [("seq/s", rate)])
    end, every = first + steps, self.config.runtime.summary_every_steps
    if end // every > first // every:
      with self.writer.as_default(step=end):
        for k, v in means.items():
          tf.summary.scalar(f"train/{k}", v)
    if train.checkpoint_every_steps and end % train.checkpoint_every_steps == 0:
      epoch.tick = self._account(epoch.tick)
      self.checkpoints.save_latest()

  def end_epoch(self, epoch: _Epoch) -> None:
    """Validation, model selection, checkpoints, early stopping and the epoch's summaries."""
    state, train = self.state, self.config.train
    epoch.tick = self._account(epoch.tick)
    seconds = time.perf_counter() - epoch.start
    self.seen_sequences += epoch.sequences
    self.train_seconds += seconds
    means = {k: v / max(int(state.epoch_step.numpy()) - epoch.first_step, 1)
             for k, v in epoch.sums.items()}
    with self._averaged():  # the weights validated and saved as the best: the averages, if any
      valid = self.evaluate(self.data.valid, self.config.policy.threshold, self.config.policy.cap)
      score = cluster.agree(self.strategy, selection_score(valid, self.config))  # one for all
      improved = improves(score, float(state.best_score.numpy()))
      if improved:
        state.best_score.assign(score)
        state.best_epoch.assign(epoch.index)
        state.best_elapsed.assign(state.elapsed)
        state.bad_epochs.assign(0)
        self.checkpoints.save_best()
      else:
        state.bad_epochs.assign_add(1)
    logging.info("epoch %d/%d [%s%s]  loss %.4f  valid %s %.4f  HR@10 %.4f  blocks %.1f/%d%s  %.1fs",
                 epoch.index + 1, train.epochs, epoch.mode,
                 ", frozen backbone" if epoch.frozen else "", means.get("loss", float("nan")),
                 SELECT_METRIC, valid["metrics"][SELECT_METRIC], valid["metrics"]["HR@10"],
                 valid["blocks"]["mean"], valid["blocks"]["num_blocks"],
                 "  (best)" if improved else "", seconds)
    with self.writer.as_default(step=int(state.step.numpy())):
      for k, v in means.items():
        tf.summary.scalar(f"train/epoch_{k}", v)
      for k, v in valid["metrics"].items():
        tf.summary.scalar(f"valid/{k}", v)
      tf.summary.scalar("valid/mean_blocks", valid["blocks"]["mean"])
    state.epoch.assign_add(1)
    state.epoch_step.assign(0)
    if state.bad_epochs.numpy() >= train.patience or state.epoch.numpy() >= train.epochs:
      state.finished.assign(1)
    self.checkpoints.save_latest()

  # ----------------------------------------------------------------------------------------------
  # After training.

  def restore_best(self) -> None:
    """The best checkpoint, on every worker once the chief has written it."""
    cluster.barrier(self.strategy)
    self.checkpoints.restore_best()

  def summary(self) -> dict:
    """The run's counters and timings, for metrics.json."""
    state = self.state
    return {
        "best_epoch": int(state.best_epoch.numpy()) + 1,
        "epochs_run": int(state.epoch.numpy()),
        "steps": int(state.step.numpy()),
        "resumed_from_step": self.resumed_from,
        "train_seconds": float(state.elapsed.numpy()),
        "seconds_to_best": float(state.best_elapsed.numpy()),
        "sequences_per_second": (self.seen_sequences / self.train_seconds
                                 if self.train_seconds else None),
        "num_params": int(sum(np.prod(v.shape) for v in self.model.trainable_variables)),
    }

  # ----------------------------------------------------------------------------------------------

  def _averaged(self):
    """A context in which the model holds the averaged weights (train.ema_decay), else its own."""
    return self.average.swapped() if self.average is not None else contextlib.nullcontext()

  def _account(self, tick: float) -> float:
    """Adds the training seconds since `tick` to state.elapsed; returns the new tick."""
    now = time.perf_counter()
    self.state.elapsed.assign_add(now - tick)
    return now

  def _stop_on_non_finite(self, step: int, batch: int, epoch: _Epoch, values: dict) -> None:
    """Stops the run at a non-finite loss or gradient (global step `step` and the epoch's batch
    `batch`, both 0-based), before anything is saved.

    The update has been applied to the weights in memory, which are therefore discarded: the
    checkpoints on disk all predate it.
    """
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    kept = [os.path.basename(p) for p in checkpoint_paths(self.checkpoints.latest_dir)]
    raise TrainingError(
        f"step {step + 1} (epoch {epoch.index + 1}, batch {batch + 1}): the training "
        + " and ".join(f"{k} is {v}" for k, v in bad.items())
        + f"; the run stopped without saving this step (checkpoints kept in "
        f"{self.checkpoints.latest_dir}: {', '.join(kept) or 'none'}). Their weights are finite, "
        "but the newest may already be diverging if it is only a step or two before this one. "
        "Fix: lower train.learning_rate or set train.clipnorm (e.g. --override "
        "train.clipnorm=1.0), check the data, and run the same command to resume; if it fails "
        "again right after resuming, delete the newest ckpt-<step>.* files so that it resumes "
        "from the one before (or use a new --workdir).")
