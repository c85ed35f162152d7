"""Losses (pure functions): full-softmax and sampled-softmax cross-entropy over positions."""

from __future__ import annotations

import tensorflow as tf


def position_mask(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Which positions count: [B, L] inputs, [B, L] labels -> [B, L] bool.

  A position counts when it has a label and at least one history item (input not padding).
  """
  return tf.logical_and(tf.not_equal(labels, 0), tf.not_equal(inputs, 0))


def full_softmax_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Cross-entropy over every item. logits: [P, V], labels: [P] -> [P]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def sampled_softmax_loss(hidden: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor,
                         bias: tf.Tensor, num_sampled: int) -> tf.Tensor:
  """Sampled-softmax cross-entropy with log-Q correction. Returns [P].

  Negatives come from a log-uniform (Zipf) sampler over ids 1..V-1, which matches the
  frequency-ordered id map (1 = most frequent); padding (0) is never sampled. Accidental hits
  (a negative equal to the label) are removed.

  Args:
    hidden: [P, C] hidden states at the counted positions.
    labels: [P] target ids (>= 1).
    weights: [V, C] output embedding; bias: [V].
    num_sampled: negatives shared by the batch (capped at V - 1).
  """
  vocab_size = weights.shape[0]
  num_sampled = min(num_sampled, vocab_size - 1)
  true = tf.cast(labels, tf.int64)[:, tf.newaxis] - 1                   # [P, 1], ids 0..V-2
  sampled, true_expected, sampled_expected = tf.random.log_uniform_candidate_sampler(
      true_classes=true, num_true=1, num_sampled=num_sampled, unique=True,
      range_max=vocab_size - 1)
  return tf.nn.sampled_softmax_loss(
      weights=weights, biases=bias, labels=true + 1, inputs=hidden, num_sampled=num_sampled,
      num_classes=vocab_size, sampled_values=(sampled + 1, true_expected, sampled_expected),
      remove_accidental_hits=True)
