"""tf.data pipelines over the flat item array: windows are gathered batch by batch.

The flat `items` array is converted to one tensor, which replaces the numpy array in the
SequenceData (so the numpy copy is released) and is captured by reference by every pipeline;
only index ranges are sliced and shuffled, so the log is held once in memory.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_skiprec.data.splits import SequenceData, Windows


def _gather(items: tf.Tensor, ends: tf.Tensor, lengths: tf.Tensor, width: int) -> tf.Tensor:
  """Left-padded ranges: [B] ends, [B] lengths -> [B, width] int32 ids (0 = padding)."""
  offsets = tf.range(width, dtype=tf.int64)[tf.newaxis, :]           # [1, W]
  index = ends[:, tf.newaxis] - width + offsets                        # [B, W]
  valid = offsets >= tf.cast(width - lengths, tf.int64)[:, tf.newaxis]  # [B, W]
  values = tf.gather(items, tf.maximum(index, 0))
  return tf.where(valid, values, tf.zeros_like(values))


class Pipelines:
  """Builds the training and evaluation datasets of one SequenceData."""

  def __init__(self, data: SequenceData, max_len: int):
    """Takes over `data.items`: afterwards it is the shared [T] int32 tensor."""
    self.max_len = max_len
    if not isinstance(data.items, tf.Tensor):
      data.items = tf.convert_to_tensor(np.ascontiguousarray(data.items, dtype=np.int32))
    self._items = data.items

  def train(self, windows: Windows, batch_size: int, *, seed: int, epoch: int,
            skip_batches: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """One epoch of shuffled training batches.

    Yields {"inputs": [B, max_len] int32, "labels": [B, max_len] int32}: labels are the inputs
    shifted by one; a position counts in the loss where both are non-zero. The shuffle order
    depends only on (seed, epoch), so `skip_batches` resumes an epoch exactly where it stopped.
    """
    width = self.max_len + 1
    ds = tf.data.Dataset.from_tensor_slices((windows.ends, windows.lengths))
    ds = ds.shuffle(len(windows), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches:
      ds = ds.skip(skip_batches)
    items = self._items

    def to_example(ends, lengths):
      tokens = _gather(items, ends, lengths, width)  # [B, max_len + 1]
      return {"inputs": tokens[:, :-1], "labels": tokens[:, 1:]}

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

  def evaluation(self, windows: Windows, batch_size: int) -> tf.data.Dataset:
    """Yields {"history": [B, max_len] int32, "target": [B] int32, "user": [B] int32}."""
    ds = tf.data.Dataset.from_tensor_slices(
        (windows.ends, windows.lengths, windows.targets, windows.users)).batch(batch_size)
    items, width = self._items, self.max_len

    def to_example(ends, lengths, targets, users):
      return {"history": _gather(items, ends, lengths, width), "target": targets, "user": users}

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
