"""Ranking metrics over the full item ranking: streaming HR, NDCG and MRR at several cut-offs.

For a target at 0-based rank r: HR@k = [r < k], NDCG@k = [r < k] / log2(r + 2),
MRR@k = [r < k] / (r + 1). The padding id 0 is never ranked.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

KS = (5, 10, 20)


def target_ranks(scores: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """0-based rank of each target among the real items. scores: [B, V], targets: [B] -> [B] int32.

  Column 0 (padding) is ignored. Ties are broken by id, lower first (as tf.math.top_k does):
  rank = #{items scoring higher} + #{items with the same score and a lower id}.
  """
  items = scores[:, 1:]                                                   # [B, V-1]
  targets = tf.cast(targets, tf.int32)
  target_score = tf.gather(scores, targets, batch_dims=1)[:, tf.newaxis]  # [B, 1]
  ids = tf.range(1, tf.shape(scores)[1], dtype=tf.int32)[tf.newaxis, :]    # [1, V-1]
  higher = items > target_score
  tied_before = tf.logical_and(tf.equal(items, target_score), ids < targets[:, tf.newaxis])
  return tf.reduce_sum(tf.cast(tf.logical_or(higher, tied_before), tf.int32), axis=1)


class RankingMetrics(keras.metrics.Metric):
  """Streaming HR/NDCG/MRR@k from target ranks; result() -> {"NDCG@10": ..., ...}."""

  def __init__(self, ks=KS, name: str = "ranking", **kwargs):
    super().__init__(name=name, **kwargs)
    self.ks = tuple(int(k) for k in ks)
    shape = (len(self.ks),)
    self.hits = self.add_weight(name="hits", shape=shape, initializer="zeros", dtype=tf.float64)
    self.ndcg = self.add_weight(name="ndcg", shape=shape, initializer="zeros", dtype=tf.float64)
    self.mrr = self.add_weight(name="mrr", shape=shape, initializer="zeros", dtype=tf.float64)
    self.count = self.add_weight(name="count", shape=(), initializer="zeros", dtype=tf.float64)

  def update_state(self, ranks, sample_weight=None):
    """ranks: [B] 0-based ranks; sample_weight: optional [B] (0 drops a row)."""
    r = tf.cast(tf.reshape(ranks, [-1, 1]), tf.float64)                   # [B, 1]
    k = tf.constant(self.ks, tf.float64)[tf.newaxis, :]                    # [1, K]
    w = tf.ones_like(r) if sample_weight is None else tf.cast(
        tf.reshape(sample_weight, [-1, 1]), tf.float64)
    inside = tf.cast(r < k, tf.float64) * w                                # [B, K]
    self.hits.assign_add(tf.reduce_sum(inside, 0))
    self.ndcg.assign_add(tf.reduce_sum(inside * math.log(2.0) / tf.math.log(r + 2.0), 0))
    self.mrr.assign_add(tf.reduce_sum(inside / (r + 1.0), 0))
    self.count.assign_add(tf.reduce_sum(w))

  def result(self) -> dict[str, tf.Tensor]:
    n = tf.maximum(self.count, 1.0)
    out = {}
    for name, total in (("HR", self.hits), ("NDCG", self.ndcg), ("MRR", self.mrr)):
      for i, k in enumerate(self.ks):
        out[f"{name}@{k}"] = total[i] / n
    return out

  def reset_state(self):
    for v in self.variables:
      v.assign(tf.zeros_like(v))
