"""SkipRec's policy network and its decisions: which residual blocks each user keeps.

Chen et al., "A User-Adaptive Layer Selection Framework for Very Deep Sequential Recommender
Models", AAAI 2021. The policy reads the user's history through its own item embedding
(initialised from the backbone's), a body that summarises it (POLICY_BODIES, by `policy.body`:
a shallow NextItNet+ with a mean over the real items, a GRU, or "pool", the cheap one: pooled
embeddings through one dense layer), batch normalisation of the summary, and a dense head; it
emits logits [B, N, 2] per user and block: index 0 = skip, 1 = keep. Unlike the reference code
there is no sigmoid before sampling (it capped P(keep) in 0.27..0.73).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from tf_skiprec.backbones.nextitnet import dilation_schedule
from tf_skiprec.layers import ResidualBlock

SKIP, KEEP = 0, 1


@keras.utils.register_keras_serializable(package="tf_skiprec")
class CnnBody(keras.layers.Layer):
  """`policy.body = "cnn"`: a shallow NextItNet+ (residual blocks, dilations 1,4) and a mean over
  the real items. x [B, L, C], seq_mask [B, L, 1] -> pooled [B, C]."""

  TRACKED = ("blocks",)  # the layers the policy network tracks (its checkpoint paths)

  def __init__(self, channels: int, num_blocks: int = 2, kernel_size: int = 3,
               dilations=(1, 4), **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.num_blocks = num_blocks
    self.kernel_size = kernel_size
    self.dilations = tuple(int(d) for d in dilations)
    self.blocks = [ResidualBlock(channels, kernel_size, d, name=f"block_{i}")
                   for i, d in enumerate(dilation_schedule(num_blocks, self.dilations))]

  def call(self, x: tf.Tensor, seq_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    for block in self.blocks:
      x = block(x, seq_mask, training=training)
    return tf.math.divide_no_nan(tf.reduce_sum(x * seq_mask, axis=1),
                                 tf.reduce_sum(seq_mask, axis=1))                          # [B, C]

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "num_blocks": self.num_blocks,
            "kernel_size": self.kernel_size, "dilations": list(self.dilations)}


@keras.utils.register_keras_serializable(package="tf_skiprec")
class GruBody(keras.layers.Layer):
  """`policy.body = "gru"`: a GRU over the real items; its last state is the summary.
  x [B, L, C], seq_mask [B, L, 1] -> pooled [B, C]."""

  TRACKED = ("gru",)

  def __init__(self, channels: int, num_blocks: int = 2, kernel_size: int = 3,
               dilations=(1, 4), **kwargs):
    del num_blocks, kernel_size, dilations  # the cnn body's shape: every body takes the same
    super().__init__(**kwargs)
    self.channels = channels
    self.gru = keras.layers.GRU(channels, name="gru")

  def call(self, x: tf.Tensor, seq_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    return self.gru(x, mask=seq_mask[..., 0] > 0, training=training)                      # [B, C]

  def get_config(self):
    return {**super().get_config(), "channels": self.channels}


@keras.utils.register_keras_serializable(package="tf_skiprec")
class PoolBody(keras.layers.Layer):
  """`policy.body = "pool"`: the cheap policy. The mean of the real items' embeddings and the mean
  of the last `recent` of them, concatenated, through one ReLU layer. No convolution and no
  recurrence, so at serving it costs a lookup, two sums and a [B, 2C] x [2C, C] product.
  x [B, L, C], seq_mask [B, L, 1] -> pooled [B, C]."""

  TRACKED = ("mlp",)

  def __init__(self, channels: int, num_blocks: int = 2, kernel_size: int = 3,
               dilations=(1, 4), recent: int = 8, **kwargs):
    del num_blocks, kernel_size, dilations  # the cnn body's shape: every body takes the same
    super().__init__(**kwargs)
    self.channels = channels
    self.recent = int(recent)
    self.mlp = keras.layers.Dense(channels, activation="relu", name="mlp")

  def call(self, x: tf.Tensor, seq_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    del training
    whole = tf.math.divide_no_nan(tf.reduce_sum(x * seq_mask, axis=1),
                                  tf.reduce_sum(seq_mask, axis=1))                         # [B, C]
    # Histories are left-padded, so the last `recent` positions hold the most recent items.
    tail, tail_mask = x[:, -self.recent:], seq_mask[:, -self.recent:]
    recent = tf.math.divide_no_nan(tf.reduce_sum(tail * tail_mask, axis=1),
                                   tf.reduce_sum(tail_mask, axis=1))                       # [B, C]
    return self.mlp(tf.concat([whole, recent], axis=-1))                                   # [B, C]

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "recent": self.recent}


# The policy bodies by name (`policy.body`; tf_skiprec/config_rules.py lists the same names): each
# is built as Body(channels, num_blocks=, kernel_size=, dilations=, name=), maps (x [B, L, C],
# seq_mask [B, L, 1]) to a summary of the history [B, C], and names in TRACKED the attributes
# holding its layers.
POLICY_BODIES = {"cnn": CnnBody, "gru": GruBody, "pool": PoolBody}


@keras.utils.register_keras_serializable(package="tf_skiprec")
class PolicyNetwork(keras.layers.Layer):
  """item ids [B, L] -> decision logits [B, N, 2] (one keep/skip decision per block, per user)."""

  def __init__(self, vocab_size: int, channels: int, num_decisions: int, body: str = "cnn",
               num_body_blocks: int = 2, kernel_size: int = 3, dilations=(1, 4),
               initial_keep_prob: float = 0.9, batch_norm: bool = True, **kwargs):
    super().__init__(**kwargs)
    if body not in POLICY_BODIES:
      raise ValueError(f"policy body must be one of {sorted(POLICY_BODIES)}, got {body!r}")
    self.vocab_size = vocab_size
    self.channels = channels
    self.num_decisions = num_decisions
    self.body = body
    self.num_body_blocks = num_body_blocks
    self.kernel_size = kernel_size
    self.dilations = tuple(int(d) for d in dilations)
    self.initial_keep_prob = initial_keep_prob
    self.batch_norm = batch_norm
    self.embedding = keras.layers.Embedding(
        vocab_size, channels, embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="item_embedding")
    encoder = POLICY_BODIES[body](channels, num_blocks=num_body_blocks, kernel_size=kernel_size,
                                  dilations=self.dilations, name=body)
    # Called as self.encoder, tracked through its own layers (self.blocks, or self.gru): the
    # checkpoint keeps the paths it had before the bodies were registered (policy/blocks/...),
    # so that earlier work directories resume.
    object.__setattr__(self, "encoder", encoder)
    for name in encoder.TRACKED:
      setattr(self, name, getattr(encoder, name))
    # The pooled history is a mean over up to L item embeddings, so it differs little from user
    # to user next to its common part (measured: P(keep) std 0.02 across users after training,
    # with no difference between kinds of user). Standardising each feature across users lets
    # the head tell users apart from the first step.
    self.norm = (keras.layers.BatchNormalization(name="pooled_norm") if batch_norm else None)
    # Start near "keep everything" (the pretrained backbone's behaviour): the keep logit's bias
    # is log(p / (1 - p)), the skip logit's 0.
    keep_bias = float(tf.math.log(initial_keep_prob / (1.0 - initial_keep_prob)))
    self.head = keras.layers.Dense(
        2 * num_decisions, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        bias_initializer=keras.initializers.Constant([0.0, keep_bias] * num_decisions), name="head")

  def call(self, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    """item_ids: [B, L] int (0 = padding) -> logits [B, N, 2]."""
    seq_mask = tf.cast(tf.not_equal(item_ids, 0), self.compute_dtype)[..., tf.newaxis]  # [B, L, 1]
    x = self.embedding(item_ids) * seq_mask                                                # [B, L, C]
    pooled = self.encoder(x, seq_mask, training=training)                                  # [B, C]
    if self.norm is not None:
      pooled = self.norm(pooled, training=training)
    return tf.reshape(self.head(pooled), [-1, self.num_decisions, 2])

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "channels": self.channels,
            "num_decisions": self.num_decisions, "body": self.body,
            "num_body_blocks": self.num_body_blocks, "kernel_size": self.kernel_size,
            "dilations": list(self.dilations), "initial_keep_prob": self.initial_keep_prob,
            "batch_norm": self.batch_norm}


def keep_probability(logits: tf.Tensor) -> tf.Tensor:
  """logits [B, N, 2] -> P(keep) [B, N]."""
  return tf.nn.softmax(logits, axis=-1)[..., KEEP]


def keep_entropy(logits: tf.Tensor) -> tf.Tensor:
  """logits [B, N, 2] -> entropy of each keep/skip decision [B, N], in nats (0 when decided)."""
  return -tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * tf.nn.log_softmax(logits, axis=-1),
                        axis=-1)


def greedy_decisions(logits: tf.Tensor, threshold, max_blocks=None) -> tf.Tensor:
  """Deterministic decisions for evaluation and serving: keep block i iff P(keep_i) >= threshold
  and, with `max_blocks`, i is among the row's max_blocks most probable blocks (keep_at_most).

  logits [B, N, 2], threshold [] or [B, 1], max_blocks None, [] or [B] int -> [B, N] float32 in
  {0, 1}.
  """
  prob = keep_probability(logits)                                       # [B, N]
  keep = prob >= tf.cast(threshold, logits.dtype)
  if max_blocks is not None:
    keep = tf.logical_and(keep, keep_at_most(prob, max_blocks))
  return tf.cast(keep, tf.float32)


def keep_at_most(prob: tf.Tensor, max_blocks) -> tf.Tensor:
  """The compute cap: which blocks are among each row's `max_blocks` most probable.

  prob [B, N] P(keep); max_blocks [] or [B] int (0 = none, >= N = all) -> [B, N] bool, True for
  the m highest P(keep) of each row (ties to the lower block index, so exactly min(m, N) per row).
  With the threshold, a row runs the blocks it would keep anyway, minus the ones it ranks lowest,
  down to m: an operator's latency knob that spans 0..N blocks whatever the policy's certainty.
  """
  order = tf.argsort(prob, axis=1, direction="DESCENDING", stable=True)   # [B, N] best first
  rank = tf.argsort(order, axis=1, stable=True)                           # [B, N] their places
  m = tf.cast(max_blocks, tf.int32)
  m = m[:, tf.newaxis] if m.shape.rank == 1 else m
  return rank < m


def straight_through_decisions(logits: tf.Tensor, temperature, seed=None) -> tf.Tensor:
  """Hard Gumbel-softmax sample with a straight-through gradient. logits [B, N, 2] -> [B, N].

  Forward: exactly 0 or 1 (the arg-max of a RelaxedOneHotCategorical sample). Backward: the
  gradient of the relaxed sample at `temperature`. `seed`: a [2] int32 stateless seed (the same
  seed, the same sample), or None for TensorFlow's stateful generator.
  """
  dist = tfp.distributions.RelaxedOneHotCategorical(temperature, logits=logits)
  soft = dist.sample(seed=seed)                                         # [B, N, 2]
  hard = tf.one_hot(tf.argmax(soft, axis=-1), 2, dtype=soft.dtype)
  return (soft + tf.stop_gradient(hard - soft))[..., KEEP]


def sampled_decisions(logits: tf.Tensor, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
  """Decisions drawn from the policy, for REINFORCE. logits [B, N, 2] ->
  (keep [B, N] float32 in {0, 1}, log-probability of the whole decision vector [B]).
  `seed` as for straight_through_decisions."""
  dist = tfp.distributions.Categorical(logits=logits)
  actions = dist.sample(seed=seed)                                      # [B, N]
  return tf.cast(actions, tf.float32), tf.reduce_sum(dist.log_prob(actions), axis=1)
