"""tf.data pipelines over the flat item array: windows are gathered batch by batch.

The flat `items` array is converted to one tensor, which replaces the numpy array in the
SequenceData (so the numpy copy is released) and is captured by reference by every pipeline;
only index ranges are sliced and shuffled, so the log is held once in memory.

Evaluation scores every item for every history, a [B, V] matrix per batch (and a few temporaries
of that size while ranking): the evaluation batch is capped so that B * V stays within
MAX_EVAL_SCORES, whatever the catalogue (B = 33 at 1M items; no cap below ~131k items at the
default 256).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from tf_skiprec.data.splits import SequenceData, Windows

MAX_EVAL_SCORES = 2 ** 25  # B * V per evaluation batch: 128 MB of float32 scores
PREFETCH = 2               # batches made ahead of the step that takes them


def _untuned() -> tf.data.Options:
  """The pipelines' options: tf.data's autotuning off.

  The map is a gather (about 1 ms a batch against a training step's 100+ ms), so there is
  nothing to tune: its parallelism is the tf.data thread pool's size and PREFETCH batches are
  made ahead. With autotuning on, deleting an iterator that has run for a minute, as each
  epoch's does when the next epoch starts, waited 0 to 28 s with no CPU in use (TensorFlow
  2.21, one core: 25 s of an 83 s epoch); the same epoch's steps took as long either way
  (bench/input_teardown.py; BUILD_NOTES.md, issue 17, sixteenth session).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


def eval_batch_size(requested: int, vocab_size: int) -> int:
  """The evaluation batch: `requested`, lowered so that batch * vocab_size <= MAX_EVAL_SCORES."""
  return max(1, min(requested, MAX_EVAL_SCORES // vocab_size))


def train_windows_used(num_windows: int, batch_size: int, replicas: int = 1) -> int:
  """How many of an epoch's windows are trained on: all of them, except a last batch smaller
  than the number of replicas (a replica with no rows cannot run the convolutions), which is
  left out (a different one each epoch: the shuffle changes)."""
  last = num_windows % batch_size
  return num_windows - last if replicas > 1 and 0 < last < replicas else num_windows


def _gather(items: tf.Tensor, ends: tf.Tensor, lengths: tf.Tensor, width: int) -> tf.Tensor:
  """Left-padded ranges: [B] ends, [B] lengths -> [B, width] int32 ids (0 = padding)."""
  offsets = tf.range(width, dtype=tf.int64)[tf.newaxis, :]           # [1, W]
  index = ends[:, tf.newaxis] - width + offsets                        # [B, W]
  valid = offsets >= tf.cast(width - lengths, tf.int64)[:, tf.newaxis]  # [B, W]
  values = tf.gather(items, tf.maximum(index, 0))
  return tf.where(valid, values, tf.zeros_like(values))


def user_balanced(windows: Windows, size: int, seed: int, epoch: int) -> np.ndarray:
  """[size] indices into the training `windows`, drawn with replacement so that every user with
  a window is equally likely, then one of that user's longest windows uniformly: each draw is a
  (user, history) pair as validation and serving see them (a user's latest history, as long as
  it is, up to max_len), one per user, where the windows themselves over-represent the users
  with long histories (on ML-100k's every-prefix windows, the 42% of users whose history is
  shorter than 50 items hold 0.7% of the windows).

  Only the longest: a user's first window starts at the beginning of its history, so with a
  large train.window_stride it is shorter (more padded) than the later ones, and a draw among
  all of them would give the budget padded histories that validation does not have (on
  ML-100k at stride 25: 56% of the draws padded, against 42% of the validation histories).
  With train.window_stride=1 every window of a user is as long as its longest. The same
  (seed, epoch), the same draws.
  """
  order, first, count, pick, rng = _users_drawn(windows, size, seed, epoch, windows.lengths)
  within = np.floor(rng.random(size) * count[pick]).astype(np.int64)  # [size] their windows
  return order[first[pick] + np.minimum(within, count[pick] - 1)]


def user_latest(windows: Windows, size: int, seed: int, epoch: int) -> np.ndarray:
  """[size] indices into the training `windows`: the same users as `user_balanced` draws for
  (seed, epoch), each at its latest window (the one that ends the user's training part).

  That window ends where the user's validation history does (splits.eval_windows): its last
  max_len items, the last training item among them, are the history that validation and
  selection score, and serving after it; `budget_histories(..., "latest")` takes them.
  """
  order, first, _, pick, _ = _users_drawn(windows, size, seed, epoch, windows.ends)
  return order[first[pick]]  # one window per user: its latest


def _users_drawn(windows: Windows, size: int, seed: int, epoch: int, key: np.ndarray):
  """What `user_balanced` and `user_latest` share. The eligible windows, those whose [W] `key`
  is their user's largest, grouped by user in index order ([E] indices, and each of the U'
  users' first position and count among them); [size] users drawn uniformly from the U'; the
  generator, for what else the caller draws. The same (seed, epoch), the same users."""
  if windows.users is None:
    raise ValueError("drawing users needs the training windows' users (splits.train_windows)")
  largest = np.full(int(windows.users.max()) + 1, np.iinfo(key.dtype).min, key.dtype)  # [U]
  np.maximum.at(largest, windows.users, key)
  eligible = np.flatnonzero(key == largest[windows.users])                      # [E]
  order = eligible[np.argsort(windows.users[eligible], kind="stable")]  # [E] grouped by user
  users, first, count = np.unique(windows.users[order], return_index=True, return_counts=True)
  rng = np.random.default_rng([seed, epoch, 0x5B])
  return order, first, count, rng.integers(0, len(users), size), rng


def budget_histories(windows: Windows, size: int, seed: int, epoch: int, over: str,
                     max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """The (ends [size] int64, lengths [size] int32) of the histories SkipRec's compute terms read
  (policy.budget_over), each at most max_len items, one user drawn per row:

  - "users": a user's longest training window's inputs (`user_balanced`; the window without
    its last item);
  - "latest": the user's validation history (`user_latest`; the last min(max_len, length)
    items of the latest window, which ends at the user's last training item), so the budget is
    held on the very histories that validation and selection count, and the calibration has no
    train-to-validation gap to close (on ML-100k's 4-block SASRec the longest windows ran 0.13
    block under validation at the same threshold, BUILD_NOTES.md, issue 17, fifteenth session).
    Measured, it fits the budget to these very rows instead: 2.0 of 4 blocks on them, 2.9 on
    the same users one item earlier, 2.17 on test (seventeenth session), so prefer "users".
    Only inputs: no row reaches the validation or the test target. A user with a single
    training item (3 interactions) has no training window, so is never drawn, by either choice.
  """
  if over == "users":
    drawn = user_balanced(windows, size, seed, epoch)
    return windows.ends[drawn] - 1, windows.lengths[drawn] - 1
  if over == "latest":
    drawn = user_latest(windows, size, seed, epoch)
    return windows.ends[drawn], np.minimum(windows.lengths[drawn], max_len).astype(np.int32)
  raise ValueError(f"budget histories over {over!r}: choose 'users' or 'latest'")


class Pipelines:
  """Builds the training and evaluation datasets of one SequenceData."""

  def __init__(self, data: SequenceData, max_len: int):
    """Takes over `data.items`: afterwards it is the shared [T] int32 tensor."""
    self.max_len = max_len
    if not isinstance(data.items, tf.Tensor):
      data.items = tf.convert_to_tensor(np.ascontiguousarray(data.items, dtype=np.int32))
    self._items = data.items
    self.vocab_size = data.id_map.vocab_size
    self._told_cap = False

  def train(self, windows: Windows, batch_size: int, *, seed: int, epoch: int,
            skip_batches: int = 0, drop_remainder: bool = False, replicas: int = 1,
            budget_over: str = "windows") -> tf.data.Dataset:
    """One epoch of shuffled training batches.

    Yields {"inputs": [B, max_len] int32, "labels": [B, max_len] int32}: labels are the inputs
    shifted by one; a position counts in the loss where both are non-zero. The shuffle order
    depends only on (seed, epoch), so `skip_batches` resumes an epoch exactly where it stopped.
    With `replicas` > 1 the global batch is split across them; a last batch too small to give
    every replica a row is left out (`train_windows_used`).

    budget_over: "windows" (the default) yields the batch alone; "users" or "latest" also yield
    "budget_inputs" [B, max_len] int32, B more histories with every user equally likely
    (`budget_histories`), row b beside the batch's row b: SkipRec's compute terms read the
    decisions on them (policy.budget_over).

    B is unknown in the element spec (the last batch may be smaller), so the training loop that
    takes its batches from this dataset is traced once, not once more for the last batch
    (BUILD_NOTES.md, issue 14, sixth pass: the same run, bit for bit, on `make train`).
    """
    ds = self._shuffled(windows, seed, epoch, replicas, batch_size)
    if budget_over != "windows":
      extra = budget_histories(windows, len(windows), seed, epoch, budget_over, self.max_len)
      ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(extra)))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches:
      ds = ds.skip(skip_batches)
    return self._examples(ds)

  def _shuffled(self, windows: Windows, seed: int, epoch: int, replicas: int,
                batch_size: int) -> tf.data.Dataset:
    """The epoch's windows (ends, lengths, counted labels) in their shuffled order, those trained
    on only."""
    counted = (windows.counted if windows.counted is not None
               else np.full(len(windows), self.max_len, np.int32))
    ds = tf.data.Dataset.from_tensor_slices((windows.ends, windows.lengths, counted))
    ds = ds.shuffle(len(windows), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    used = train_windows_used(len(windows), batch_size, replicas)
    return ds.take(used) if used < len(windows) else ds

  def _examples(self, batches: tf.data.Dataset) -> tf.data.Dataset:
    """Batches of (ends, lengths, counted), or of ((ends, lengths, counted), (budget history
    ends, lengths)) -> {"inputs", "labels"[, "budget_inputs"]} (see `train`), prefetched."""
    width, items = self.max_len + 1, self._items

    def windows(ends, lengths, counted):
      tokens = _gather(items, ends, lengths, width)  # [B, max_len + 1]
      # Overlapping windows: a label counted in another window is 0 here (no loss).
      position = tf.range(self.max_len)[tf.newaxis, :]                            # [1, max_len]
      counts = position >= self.max_len - counted[:, tf.newaxis]                  # [B, max_len]
      labels = tf.where(counts, tokens[:, 1:], tf.zeros_like(tokens[:, 1:]))
      return {"inputs": tokens[:, :-1], "labels": labels}

    def to_example(main, extra=None):
      example = windows(*main)
      if extra is not None:
        example["budget_inputs"] = _gather(items, extra[0], extra[1], self.max_len)
      return example

    if isinstance(batches.element_spec[0], tuple):
      mapped = batches.map(lambda main, extra: to_example(main, extra),
                           num_parallel_calls=tf.data.AUTOTUNE)
    else:
      mapped = batches.map(lambda *main: to_example(main), num_parallel_calls=tf.data.AUTOTUNE)
    return mapped.prefetch(PREFETCH).with_options(_untuned())

  def evaluation(self, windows: Windows, batch_size: int) -> tf.data.Dataset:
    """Yields {"history": [B, max_len] int32, "target": [B] int32, "user": [B] int32}.

    B is `batch_size`, or fewer on a large catalogue (`eval_batch_size`).
    """
    capped = eval_batch_size(batch_size, self.vocab_size)
    if capped < batch_size and not self._told_cap:
      self._told_cap = True
      logging.info("Evaluation batch %d instead of %d: %d items (at most %d scores a batch).",
                   capped, batch_size, self.vocab_size - 1, MAX_EVAL_SCORES)
    batch_size = capped
    ds = tf.data.Dataset.from_tensor_slices(
        (windows.ends, windows.lengths, windows.targets, windows.users)).batch(batch_size)
    items, width = self._items, self.max_len

    def to_example(ends, lengths, targets, users):
      return {"history": _gather(items, ends, lengths, width), "target": targets, "user": users}

    return (ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(PREFETCH)
            .with_options(_untuned()))
