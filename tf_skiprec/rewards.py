"""SkipRec-RL rewards and advantages (pure functions): pay for accuracy, charge for compute.

Per window (user) b, with usage_b = executed blocks / N:
  "likelihood" (the default, docs/method.md §3.3): R_b = mean over the window's counted positions
    of log p(target | history, decisions), minus compute_cost * usage_b. Every window, every
    position and every block's effect on the scores counts, so the sampled and the greedy
    decisions get different rewards whenever they differ.
  "quadratic" (docs/method.md §3.3): 1 - usage^2 if the window's last target is in the top k,
    else -gamma;
  "reference" (the release's): 1 - (1 - usage)^2 if in the top k, else -gamma. It rewards using
    MORE blocks; it is kept only so the reference can be reproduced.
The advantage is R(sampled decisions) - R(greedy decisions) (self-critical, as BlockDrop and
SCST), optionally divided by its batch standard deviation (`normalized_advantage`).
"""

from __future__ import annotations

import tensorflow as tf

from tf_skiprec.config_rules import CHOICES

REWARDS = CHOICES["policy.reward"]
TOP_K_REWARDS = ("quadratic", "reference")  # the rewards `block_reward` computes

# Added to the batch standard deviation of the advantages. float32 noise in a difference of two
# mean log-likelihoods of a few nats is ~1e-6, so a batch whose advantages are only noise is
# scaled by <= 0.1, while a batch with real advantages (std >= 1e-3 nats) is scaled within 1% of
# 1 / std. A batch of zeros (every sample equal to its greedy decisions) stays 0.
ADVANTAGE_EPS = 1e-5


def block_reward(hit: tf.Tensor, usage: tf.Tensor, gamma: float = 1.0,
                 kind: str = "quadratic") -> tf.Tensor:
  """The top-k rewards. hit: [B] bool (the last target in the top k); usage: [B] in [0, 1]
  -> reward [B]: "quadratic" 1 - usage^2, "reference" 1 - (1 - usage)^2 on a hit, else -gamma."""
  usage = tf.cast(usage, tf.float32)
  if kind == "quadratic":
    paid = 1.0 - tf.square(usage)
  elif kind == "reference":
    paid = 1.0 - tf.square(1.0 - usage)
  else:
    raise ValueError(f"policy.reward={kind!r}: block_reward computes {TOP_K_REWARDS} (of "
                     f"{REWARDS}); 'likelihood' is likelihood_reward")
  return tf.where(tf.cast(hit, tf.bool), paid, -gamma * tf.ones_like(paid))


def likelihood_reward(logits: tf.Tensor, labels: tf.Tensor, windows: tf.Tensor,
                      usage: tf.Tensor, compute_cost: float) -> tf.Tensor:
  """The "likelihood" reward: mean log-likelihood of each window's targets, minus compute.

  R_b = (1 / P_b) * sum over the window's P_b positions p of log softmax(logits_p)[label_p]
        - compute_cost * usage_b;
  a window without a counted position has mean 0 (R_b = -compute_cost * usage_b).

  Args:
    logits: [P, V] full-softmax logits at the batch's counted positions (losses.position_mask).
    labels: [P] the target at each of them.
    windows: [P] int, the window (row of the batch) each position belongs to, in [0, B).
    usage: [B] executed blocks / N of each window.
    compute_cost: nats of mean log-likelihood one full usage (every block) costs.

  Returns:
    [B] float32, with no gradient.
  """
  log_likelihood = -tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.stop_gradient(logits))                  # [P]
  num_windows = tf.shape(usage)[0]
  total = tf.math.unsorted_segment_sum(log_likelihood, windows, num_windows)  # [B]
  count = tf.math.unsorted_segment_sum(tf.ones_like(log_likelihood), windows, num_windows)
  usage = tf.cast(tf.stop_gradient(usage), log_likelihood.dtype)
  return tf.math.divide_no_nan(total, count) - compute_cost * usage


def normalized_advantage(advantage: tf.Tensor, eps: float = ADVANTAGE_EPS) -> tf.Tensor:
  """advantage [B] -> advantage / (its standard deviation over the batch + eps) [B].

  The batch mean is NOT subtracted. The self-critical advantage R(sampled) - R(greedy) is
  already centred user by user: greedy decisions are an exact per-user baseline, and where a
  sample equals them the advantage is exactly 0 (that window carries no update). Subtracting
  the batch mean would turn those zeros into a push against the greedy decisions in every such
  window (most windows, once the policy is confident), adding variance and a 1/B bias, and it
  would flip the sign of samples that beat their own greedy decisions by less than the batch's
  mean. PPO subtracts the mean because its baseline is a learned value whose error has a common
  offset; ours has none. Dividing by the standard deviation only sets the step's scale, so that
  one policy learning rate serves rewards of any scale (BlockDrop, SkipNet, PPO).

  The standard deviation is the population one (divide by B). Under tf.distribute the batch is
  the replica's: each replica normalises its own share (acceptable: the scale, not the sign,
  changes between replicas).
  """
  return advantage / (tf.math.reduce_std(advantage) + eps)
