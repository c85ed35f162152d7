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


def sample_negatives(labels: tf.Tensor, num_sampled: int, vocab_size: int):
  """Log-uniform (Zipf) negatives over ids 1..V-1, shared by the batch; padding is never drawn.

  The log-uniform law matches the frequency-ordered id map (1 = most frequent).

  Args:
    labels: [P] target ids (>= 1).
    num_sampled: how many distinct negatives (capped at V - 1).
    vocab_size: V, the padding id included.

  Returns:
    (sampled [S] int64 ids in 1..V-1, true_expected [P, 1], sampled_expected [S]), the
    expected counts being what the log-Q correction subtracts.
  """
  num_sampled = min(num_sampled, vocab_size - 1)
  true = tf.cast(labels, tf.int64)[:, tf.newaxis] - 1                   # [P, 1], ids 0..V-2
  sampled, true_expected, sampled_expected = tf.random.log_uniform_candidate_sampler(
      true_classes=true, num_true=1, num_sampled=num_sampled, unique=True,
      range_max=vocab_size - 1)
  return sampled + 1, true_expected, sampled_expected


def sampled_softmax_loss(hidden: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor,
                         bias: tf.Tensor, num_sampled: int, sampled_values=None) -> tf.Tensor:
  """Sampled-softmax cross-entropy with log-Q correction. Returns [P].

  Accidental hits (a negative equal to the label) are removed.

  Args:
    hidden: [P, C] hidden states at the counted positions.
    labels: [P] target ids (>= 1).
    weights: [V, C] output embedding; bias: [V].
    num_sampled: negatives shared by the batch.
    sampled_values: optional (sampled, true_expected, sampled_expected) as from
      `sample_negatives`; drawn here when None.
  """
  vocab_size = weights.shape[0]
  if sampled_values is None:
    sampled_values = sample_negatives(labels, num_sampled, vocab_size)
  return tf.nn.sampled_softmax_loss(
      weights=weights, biases=bias, labels=tf.cast(labels, tf.int64)[:, tf.newaxis],
      inputs=hidden, num_sampled=int(sampled_values[0].shape[0]), num_classes=vocab_size,
      sampled_values=sampled_values, remove_accidental_hits=True)
