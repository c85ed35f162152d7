"""SkipRec-RL rewards (pure functions): pay for accuracy, charge for compute.

Per user, with usage = executed blocks / N:
  "quadratic" (ours, docs/method.md §3): 1 - usage^2 if the target is in the top k, else -gamma;
  "reference" (the release's): 1 - (1 - usage)^2 if in the top k, else -gamma. It rewards using
  MORE blocks; it is kept only so the reference can be reproduced.
"""

from __future__ import annotations

import tensorflow as tf

from tf_skiprec.config_rules import CHOICES

REWARDS = CHOICES["policy.reward"]


def block_reward(hit: tf.Tensor, usage: tf.Tensor, gamma: float = 1.0,
                 kind: str = "quadratic") -> tf.Tensor:
  """hit: [B] bool (target in the top k); usage: [B] in [0, 1] -> reward [B]."""
  usage = tf.cast(usage, tf.float32)
  if kind == "quadratic":
    paid = 1.0 - tf.square(usage)
  elif kind == "reference":
    paid = 1.0 - tf.square(1.0 - usage)
  else:
    raise ValueError(f"policy.reward must be one of {REWARDS}, got {kind!r}")
  return tf.where(tf.cast(hit, tf.bool), paid, -gamma * tf.ones_like(paid))
