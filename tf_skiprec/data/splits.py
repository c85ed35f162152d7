"""Chronological per-user leave-one-out splits (docs/method.md §5), stored once as a flat item array.

All users' sequences are concatenated into one int32 array `items` with `offsets` (CSR layout),
so the log is held once; training windows and evaluation histories are index ranges into it and
are materialised batch by batch in the tf.data pipeline (tf_skiprec.data.pipeline).

For a user with sequence s_1..s_n (sorted by timestamp, ties in file order):
  test target s_n, history s_1..s_{n-1} (last max_len items);
  validation target s_{n-1}, history s_1..s_{n-2};
  training sequence s_1..s_{n-2}, cut into windows of max_len + 1 items from the end, one every
  `stride` items (max_len by default: each window overlaps the previous one by one item); every
  training item s_2..s_{n-2} is a counted label exactly once, in the window where it has the most
  history before it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.interactions import Interactions
from tf_skiprec.errors import DataError

KINDS_UNKNOWN = ""


@dataclasses.dataclass
class SequenceData:
  """Per-user chronological sequences of dense item ids.

  Attributes:
    items: [T] int32 dense ids, every kept user's full sequence, concatenated (a numpy array,
      or the shared tensor once a `Pipelines` has taken it over).
    offsets: [U + 1] int64; user u's sequence is items[offsets[u]:offsets[u + 1]].
    user_ids: [U] raw user ids.
    user_kinds: [U] strings ("shallow"/"deep" for synthetic data, "" when unknown).
    id_map: the item IdMap.
    dropped_users: users dropped for having fewer than `min_interactions` interactions.
  """
  items: np.ndarray
  offsets: np.ndarray
  user_ids: np.ndarray
  user_kinds: np.ndarray
  id_map: IdMap
  dropped_users: int = 0

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)


def build_sequences(log: Interactions, min_interactions: int = 3) -> SequenceData:
  """Sorts the log per user by time, drops short users, and maps item ids by frequency."""
  if min_interactions < 3:
    raise DataError(f"min_interactions={min_interactions} leaves no training item.",
                    path=log.source, fix="use data.min_interactions >= 3.")
  if len(log) == 0:
    raise DataError("the log has no interactions.", path=log.source, fix="point at a non-empty log.")
  user_uniques, user_codes = np.unique(log.users, return_inverse=True)
  # np.lexsort is stable: equal (user, timestamp) keep their file order.
  order = np.lexsort((log.timestamps, user_codes))
  counts = np.bincount(user_codes, minlength=len(user_uniques))
  keep_user = counts >= min_interactions
  dropped = int((~keep_user).sum())
  if dropped:
    logging.info("Dropped %d of %d users with fewer than %d interactions.", dropped,
                 len(user_uniques), min_interactions)
  order = order[keep_user[user_codes[order]]]
  kept_users = np.flatnonzero(keep_user)
  if len(kept_users) < 2:
    raise DataError(
        f"too few users to split: {len(kept_users)} of {len(user_uniques)} users have at least "
        f"{min_interactions} interactions (needed: 2).", path=log.source,
        fix="use a larger log, or lower data.min_interactions (minimum 3).")
  items_raw = log.items[order]
  id_map = IdMap.from_items(items_raw)
  if id_map.num_items < 2:
    raise DataError(f"too few items to rank: {id_map.num_items} distinct item(s) (needed: 2).",
                    path=log.source, fix="use a log with at least two distinct items.")
  offsets = np.concatenate([[0], np.cumsum(counts[kept_users])]).astype(np.int64)
  user_ids = user_uniques[kept_users].astype(str)
  if log.user_kinds:
    kinds = np.asarray([log.user_kinds.get(u, KINDS_UNKNOWN) for u in user_ids.tolist()], dtype=str)
  else:
    kinds = np.full(len(user_ids), KINDS_UNKNOWN, dtype="<U7")
  return SequenceData(items=id_map.encode(items_raw), offsets=offsets, user_ids=user_ids,
                      user_kinds=kinds, id_map=id_map, dropped_users=dropped)


@dataclasses.dataclass
class Windows:
  """Index ranges into `SequenceData.items`.

  Attributes:
    ends: [W] int64 exclusive end of each range.
    lengths: [W] int32 number of items in each range (<= the window width).
    targets: [W] int32 item to predict after the range (evaluation only; None for training).
    users: [W] int32 user index of each range (training windows: their user's, in user order).
    counted: [W] int32 how many of the range's last labels count in the loss (training only;
      the earlier ones count in another, overlapping, range).
  """
  ends: np.ndarray
  lengths: np.ndarray
  targets: np.ndarray | None = None
  users: np.ndarray | None = None
  counted: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.ends)


def train_windows(data: SequenceData, max_len: int, stride: int = 0) -> Windows:
  """Windows of up to max_len + 1 items over each user's training part (all but the last 2), the
  j-th from the end ending stride * j items before it, down to the one that starts the part.

  stride: 0 or max_len = end to end (consecutive windows share one item). Below max_len the
  windows overlap; window j counts only its last `stride` labels (they have >= max_len - stride
  items of history in it) and the first window counts all of its own, so each label counts once.
  """
  stride = stride or max_len
  starts = data.offsets[:-1]
  n_train = data.lengths - 2                              # [U]
  # The first window starts the part once n - j * stride <= max_len + 1.
  later = np.maximum(0, -(-(n_train - max_len - 1) // stride))  # windows after the first
  n_windows = np.where(n_train >= 2, later + 1, 0)
  user = np.repeat(np.arange(data.num_users), n_windows)  # [W]
  j = np.arange(len(user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
  ends = starts[user] + n_train[user] - j * stride
  lengths = np.minimum(max_len + 1, ends - starts[user]).astype(np.int32)
  first = j == n_windows[user] - 1
  counted = np.where(first, max_len, stride).astype(np.int32)
  return Windows(ends=ends.astype(np.int64), lengths=lengths, counted=counted,
                 users=user.astype(np.int32))


def eval_windows(data: SequenceData, split: str, max_len: int) -> Windows:
  """One history per user: split "valid" predicts the second-last item, "test" the last."""
  if split not in ("valid", "test"):
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
  starts = data.offsets[:-1]
  ends = data.offsets[1:] - (2 if split == "valid" else 1)  # exclusive end of the history
  lengths = np.minimum(max_len, ends - starts).astype(np.int32)
  if isinstance(data.items, np.ndarray):
    targets = data.items[ends]
  else:  # taken over by a Pipelines: gather, do not copy the whole tensor back
    targets = tf.gather(data.items, ends).numpy()
  return Windows(ends=ends.astype(np.int64), lengths=lengths, targets=targets.astype(np.int32),
                 users=np.arange(data.num_users, dtype=np.int32))
