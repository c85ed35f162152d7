"""What a run trains and evaluates on: the sequences of `data.dataset`, its training windows, the
validation and test histories, and the tf.data pipelines over them."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tf_skiprec.config import DataConfig
from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.pipeline import Pipelines
from tf_skiprec.data.sources import load_interactions
from tf_skiprec.data.splits import (SequenceData, Windows, build_sequences, eval_windows,
                                    train_windows)


@dataclasses.dataclass
class RunData:
  """A loaded data set.

  Attributes:
    sequences: the per-user sequences (its `items` taken over by `pipelines`).
    train, valid, test: the training windows and the evaluation histories (one per user).
    pipelines: the tf.data pipelines over them.
  """
  sequences: SequenceData
  train: Windows
  valid: Windows
  test: Windows
  pipelines: Pipelines

  @classmethod
  def load(cls, config: DataConfig, window_stride: int = 0) -> "RunData":
    """Reads (or generates) `config.dataset` and splits it, training windows every
    `window_stride` items (train.window_stride; 0 = end to end); DataError on a bad source."""
    sequences = build_sequences(load_interactions(config), config.min_interactions)
    data = cls(sequences=sequences,
               train=train_windows(sequences, config.max_len, window_stride),
               valid=eval_windows(sequences, "valid", config.max_len),
               test=eval_windows(sequences, "test", config.max_len),
               pipelines=Pipelines(sequences, config.max_len))
    logging.info("Data: %d users (%d dropped, < %d interactions), %d items, %d interactions, "
                 "%d training windows.", sequences.num_users, sequences.dropped_users,
                 config.min_interactions, sequences.id_map.num_items,
                 int(sequences.items.shape[0]), len(data.train))
    return data

  @property
  def id_map(self) -> IdMap:
    return self.sequences.id_map

  @property
  def vocab_size(self) -> int:
    return self.sequences.id_map.vocab_size

  @property
  def user_kinds(self) -> np.ndarray:
    return self.sequences.user_kinds
