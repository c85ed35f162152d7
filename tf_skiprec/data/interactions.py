"""The raw interaction log every reader returns, before ids are mapped."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interactions:
  """An interaction log in file order.

  Attributes:
    users: [n] raw user ids, as strings (numpy unicode array).
    items: [n] raw item ids, as strings (numpy unicode array).
    timestamps: [n] float64 timestamps (any monotone unit).
    source: where the log came from (a path or "synthetic(...)"), for messages.
    user_kinds: optional {raw user id: kind} (the synthetic generator records "shallow"/"deep").
  """
  users: np.ndarray
  items: np.ndarray
  timestamps: np.ndarray
  source: str
  user_kinds: dict[str, str] | None = None

  def __post_init__(self):
    n = len(self.users)
    if len(self.items) != n or len(self.timestamps) != n:
      raise ValueError(
          f"Interactions from {self.source}: users ({n}), items ({len(self.items)}) and "
          f"timestamps ({len(self.timestamps)}) must have the same length.")

  def __len__(self) -> int:
    return len(self.users)
