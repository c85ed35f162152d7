"""The run's resumable state and its checkpoints (latest and best) in the work directory."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil

import tensorflow as tf

from tf_skiprec.errors import TrainingError
from tf_skiprec.training.selection import NO_SCORE


class RunState(tf.Module):
  """Counters that make a run resumable. All live in tf.Variables and are checkpointed.

  step: global step; epoch: current epoch (0-based); epoch_step: batches done in `epoch`;
  best_score: the best epoch's model-selection score (selection.py); best_epoch; bad_epochs:
  epochs since the best; elapsed: training seconds so far; best_elapsed: training seconds when
  the best was reached; finished: 1 once training has stopped (epochs done or early stop).
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
    self.best_score = f64("best_score", NO_SCORE)
    self.elapsed = f64("elapsed")
    self.best_elapsed = f64("best_elapsed")


class Checkpoints:
  """`workdir/checkpoints` (latest, for resuming: the model, the optimisers, the run state and
  the weights' `average` when there is one) and `workdir/best` (the best validation model: the
  weights validated, the averaged ones under train.ema_decay).

  Saving is atomic: TensorFlow writes a checkpoint's files under temporary names, renames them,
  and only then rewrites the `checkpoint` state file that names the latest one (by rename), so a
  run killed mid-save resumes from the previous checkpoint. Restoring falls back: a latest
  checkpoint that cannot be read (truncated, corrupted) is skipped with a warning for the one
  before it.

  `scratch`: a non-chief worker of a multi-worker run saves into this directory instead (saving
  is collective, so every worker saves), which is emptied after each save; it restores from
  `workdir` like the chief (tf_skiprec/training/cluster.py).
  """

  def __init__(self, workdir: str, *, model, optimizers: dict, state: RunState,
               average: tf.Module | None = None, max_to_keep: int = 3,
               scratch: str | None = None):
    self.state = state
    self.scratch = scratch
    extra = {"average": average} if average is not None else {}
    self.latest = tf.train.Checkpoint(model=model, state=state, **optimizers, **extra)
    self.best = tf.train.Checkpoint(model=model)
    self.latest_dir = os.path.join(workdir, "checkpoints")
    self.best_dir = os.path.join(workdir, "best")
    root = scratch or workdir
    self.latest_manager = tf.train.CheckpointManager(
        self.latest, os.path.join(root, "checkpoints"), max_to_keep=max_to_keep,
        step_counter=state.step)
    self.best_manager = tf.train.CheckpointManager(
        self.best, os.path.join(root, "best"), max_to_keep=1, step_counter=state.step)

  def restore_latest(self) -> int:
    """Restores the newest readable checkpoint, if any; returns its step (0 if none)."""
    candidates = checkpoint_paths(self.latest_dir)
    for i, path in enumerate(candidates):
      try:
        self.latest.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        logging.warning("Checkpoint %s cannot be read (%s: %s); %s.", path, type(e).__name__,
                        first, "falling back to the one before it" if i + 1 < len(candidates)
                        else "there is no earlier one")
        continue
      logging.info("Resumed from %s at step %d.", path, int(self.state.step.numpy()))
      return int(self.state.step.numpy())
    if candidates:
      raise TrainingError(
          f"{self.latest_dir}: none of the checkpoints {candidates} can be read, so the run "
          "cannot resume. Fix: restore the directory from a backup, or start again in a new "
          "--workdir.")
    return 0

  def save_latest(self) -> str:
    return self._saved(self.latest_manager.save(checkpoint_number=self.state.step))

  def save_best(self) -> str:
    return self._saved(self.best_manager.save(checkpoint_number=self.state.step))

  def restore_best(self) -> None:
    path = tf.train.latest_checkpoint(self.best_dir)
    if path is None:
      raise TrainingError(f"{self.best_dir}: no best checkpoint, so the run cannot be evaluated. "
                          "Fix: run the same command again (with more epochs if it stopped "
                          "before its first evaluation), or use a new --workdir.")
    try:
      self.best.restore(path).expect_partial()
    except (tf.errors.OpError, ValueError) as e:
      raise TrainingError(
          f"{path}: the best checkpoint cannot be read ({type(e).__name__}). Fix: delete "
          f"{self.best_dir} and resume with a larger train.epochs to find the best again, or use "
          "a new --workdir.") from e

  def _saved(self, path: str) -> str:
    if self.scratch:  # a non-chief worker's copy: only the chief's is kept
      shutil.rmtree(self.scratch, ignore_errors=True)
    return path


def checkpoint_paths(directory: str) -> list[str]:
  """The checkpoints in `directory`, newest first.

  From the `checkpoint` state file; when that file is unreadable (TensorFlow would then see no
  checkpoint at all and start again), from the `ckpt-<step>.index` files, with a warning.
  """
  state_file = os.path.join(directory, "checkpoint")
  state = tf.train.get_checkpoint_state(directory)
  if state is not None:  # TensorFlow has already joined relative paths to `directory`
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  else:
    paths = [p[: -len(".index")] for p in glob.glob(os.path.join(directory, "ckpt-*.index"))]
    if paths and os.path.exists(state_file):
      logging.warning("%s cannot be read; using the checkpoint files beside it (%d found).",
                      state_file, len(paths))
  return sorted(paths, key=_step_of, reverse=True)


def _step_of(path: str) -> int:
  match = re.search(r"-(\d+)$", path)
  return int(match.group(1)) if match else -1
