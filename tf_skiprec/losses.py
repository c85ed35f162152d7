"""Losses (pure functions): full-softmax and sampled-softmax cross-entropy over positions, and the
KL divergence between two softmaxes (distillation)."""

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


def softmax_kl(teacher_logits: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
  """KL(softmax(teacher) || softmax(student)) per row: [P, V], [P, V] -> [P].

  sum_v p_v (log p_v - log q_v), computed from log-softmaxes (an item the teacher gives
  probability 0 adds 0). The gradient reaches both arguments: stop the teacher's yourself.
  """
  log_p = tf.nn.log_softmax(teacher_logits, axis=-1)
  log_q = tf.nn.log_softmax(student_logits, axis=-1)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


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

  Accidental hits (a negative equal to the label) are removed. Cost O(P * S * C) and O(P * S)
  memory, nothing of size V but the rows gathered from `weights` (so the gradient of `weights`
  is row-sparse).

  The value of `tf.nn.sampled_softmax_loss(..., remove_accidental_hits=True)` (tested), with
  fewer passes over the [P, S] logits: loss = softplus(logsumexp(sampled) - true), where tf.nn's
  concatenates [P, 1 + S] logits, builds a dense [P, 1 + S] label matrix and a dense
  accidental-hit matrix (SparseToDense) and runs the softmax cross-entropy kernel on them
  (measured at P = 51,200, S = 200: ~1.6x the time of this).

  Args:
    hidden: [P, C] hidden states at the counted positions.
    labels: [P] target ids (>= 1).
    weights: [V, C] output embedding; bias: [V].
    num_sampled: negatives shared by the batch.
    sampled_values: optional (sampled, true_expected, sampled_expected) as from
      `sample_negatives`; drawn here when None.
  """
  if sampled_values is None:
    sampled_values = sample_negatives(labels, num_sampled, weights.shape[0])
  sampled, true_expected, sampled_expected = sampled_values            # [S], [P, 1], [S]
  labels = tf.cast(labels, tf.int64)
  sampled = tf.cast(sampled, tf.int64)
  true_logits = (tf.reduce_sum(hidden * tf.gather(weights, labels), axis=1)
                 + tf.gather(bias, labels) - tf.math.log(true_expected[:, 0]))     # [P]
  sampled_logits = tf.matmul(hidden, tf.gather(weights, sampled), transpose_b=True)  # [P, S]
  sampled_logits += tf.gather(bias, sampled) - tf.math.log(sampled_expected)
  rows, columns, hit = tf.nn.compute_accidental_hits(labels[:, tf.newaxis], sampled,
                                                     num_true=1)         # -FLT_MAX at each hit
  sampled_logits = tf.tensor_scatter_nd_add(
      sampled_logits, tf.stack([rows, tf.cast(columns, tf.int32)], axis=1),
      tf.cast(hit, sampled_logits.dtype))
  # -log softmax of the true class among [true, sampled]: log(e^t + sum e^s) - t.
  return tf.math.softplus(tf.reduce_logsumexp(sampled_logits, axis=1) - true_logits)  # [P]
