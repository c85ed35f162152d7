"""The run's resumable state and its checkpoints (latest and best) in the work directory."""

from __future__ import annotations

import logging
import os

import tensorflow as tf


class RunState(tf.Module):
  """Counters that make a run resumable. All live in tf.Variables and are checkpointed.

  step: global step; epoch: current epoch (0-based); epoch_step: batches done in `epoch`;
  best_score: best validation NDCG@10; best_epoch; bad_epochs: epochs since the best;
  elapsed: training seconds so far; best_elapsed: training seconds when the best was reached;
  finished: 1 once training has stopped (epochs done or early stop).
  """

  def __init__(self):
    super().__init__(name="run_state")
    i64 = lambda name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
    f64 = lambda name, v=0.0: tf.Variable(v, dtype=tf.float64, trainable=False, name=name)
    self.step = i64("step")
    self.epoch = i64("epoch")
    self.epoch_step = i64("epoch_step")
    self.best_epoch = i64("best_epoch")
    self.bad_epochs = i64("bad_epochs")
    self.finished = i64("finished")
    self.best_score = f64("best_score", -1e9)
    self.elapsed = f64("elapsed")
    self.best_elapsed = f64("best_elapsed")


class Checkpoints:
  """`workdir/checkpoints` (latest, for resuming) and `workdir/best` (best validation model)."""

  def __init__(self, workdir: str, *, model, optimizers: dict, state: RunState,
               max_to_keep: int = 3):
    self.state = state
    self.latest = tf.train.Checkpoint(model=model, state=state, **optimizers)
    self.best = tf.train.Checkpoint(model=model)
    self.latest_manager = tf.train.CheckpointManager(
        self.latest, os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep,
        step_counter=state.step)
    self.best_manager = tf.train.CheckpointManager(
        self.best, os.path.join(workdir, "best"), max_to_keep=1, step_counter=state.step)

  def restore_latest(self) -> int:
    """Restores the latest checkpoint if there is one; returns the restored step (0 if none)."""
    path = self.latest_manager.latest_checkpoint
    if path is None:
      return 0
    self.latest.restore(path).assert_existing_objects_matched()
    logging.info("Resumed from %s at step %d.", path, int(self.state.step.numpy()))
    return int(self.state.step.numpy())

  def save_latest(self) -> str:
    return self.latest_manager.save(checkpoint_number=self.state.step)

  def save_best(self) -> str:
    return self.best_manager.save(checkpoint_number=self.state.step)

  def restore_best(self) -> None:
    path = self.best_manager.latest_checkpoint
    if path is None:
      raise FileNotFoundError(f"no best checkpoint in {self.best_manager.directory}")
    self.best.restore(path).expect_partial()

  @property
  def directories(self) -> list[str]:
    return [self.latest_manager.directory, self.best_manager.directory]
