"""SASRec's residual block with SkipRec's skippable residual: causal multi-head self-attention and
a point-wise feed-forward layer, each pre-LayerNorm and scaled by a ReZero scalar.

SASRec: Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. ReZero:
Bachlechner et al., 2020. SkipRec: Chen et al., AAAI 2021.

The block is x -> x + F(x), with
  a    = alpha * Attention(LN1(x))            (causal; padded keys never attended to)
  F(x) = a + alpha * FFN(LN2(x + a))          (FFN: Dense(inner, ReLU or GELU) -> Dense(C))
so x + F(x) is a pre-LN transformer block whose two sublayers are scaled by one ReZero alpha
(0 at initialisation: every block starts as the identity, as NextItNet+'s do). Skipping is then
NextItNet+'s semantics exactly: x + m * F(x), m in {0, 1}, F(x) being the whole block's change
(`branch`). Padded steps of F(x) are zeroed, so the residual stream stays zero on padding.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

# The feed-forward layer's activation by name (model.activation), as Keras's Dense applies it:
# its "gelu" is the exact (erf) GELU, RecBole's and BERT4Rec's. The frozen export block applies
# these functions.
ACTIVATIONS = {"relu": tf.nn.relu, "gelu": lambda x: tf.nn.gelu(x, approximate=False)}


@keras.utils.register_keras_serializable(package="tf_skiprec")
class AttentionBlock(keras.layers.Layer):
  """x [B, L, C] -> x + F(x) (the module docstring). seq_mask [B, L, 1]: 1 = item, 0 = padding."""

  def __init__(self, channels: int, num_heads: int = 2, inner_size: int | None = None,
               dropout: float = 0.0, epsilon: float = 1e-6, activation: str = "relu", **kwargs):
    super().__init__(**kwargs)
    if channels % num_heads:
      raise ValueError(f"channels ({channels}) must be a multiple of num_heads ({num_heads})")
    if activation not in ACTIVATIONS:
      raise ValueError(f"activation {activation!r}: one of {sorted(ACTIVATIONS)}")
    self.activation = activation
    self.channels = channels
    self.num_heads = num_heads
    self.inner_size = inner_size or channels
    self.dropout = dropout
    self.epsilon = epsilon
    self.norm1 = keras.layers.LayerNormalization(epsilon=epsilon, name="norm1")
    self.attention = keras.layers.MultiHeadAttention(num_heads, channels // num_heads,
                                                     dropout=dropout, name="attention")
    self.norm2 = keras.layers.LayerNormalization(epsilon=epsilon, name="norm2")
    self.inner = keras.layers.Dense(self.inner_size, activation=activation, name="ffn_inner")
    self.outer = keras.layers.Dense(channels, name="ffn_outer")
    self.drop = keras.layers.Dropout(dropout)
    # Created here, not in build(), because the backbone calls `branch` directly.
    self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros", trainable=True)

  @staticmethod
  def attention_mask(seq_mask: tf.Tensor) -> tf.Tensor:
    """seq_mask [B, L, 1] -> [B, L, L] bool: query t may see key s iff s <= t and s is an item.
    A padded query sees nothing (its softmax is then uniform and finite); its output is zeroed."""
    length = tf.shape(seq_mask)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)   # [L, L], s <= t
    keys = tf.cast(tf.transpose(seq_mask, [0, 2, 1]), tf.bool)                  # [B, 1, L]
    return tf.logical_and(causal[tf.newaxis], keys)

  def branch(self, x: tf.Tensor, seq_mask: tf.Tensor,
             training: bool | None = None) -> tf.Tensor:
    """F(x) with padded steps zeroed. x: [B, L, C]; seq_mask: [B, L, 1] -> [B, L, C]."""
    q = self.norm1(x)
    a = self.attention(q, q, attention_mask=self.attention_mask(seq_mask), training=training)
    a = self.alpha * self.drop(a, training=training) * seq_mask
    h = self.outer(self.drop(self.inner(self.norm2(x + a)), training=training))
    h = self.alpha * self.drop(h, training=training)
    self.built = True  # called through `branch`, not __call__, by the backbone and the export
    return (a + h) * seq_mask

  def branch_at(self, x: tf.Tensor, seq_mask: tf.Tensor, index: tf.Tensor,
                training: bool | None = None) -> tf.Tensor:
    """F(x) at the positions `index` only: x [B, L, C], seq_mask [B, L, 1], index [P, 2] int
    (row, position) -> [P, C], tf.gather_nd(branch(x, seq_mask), index) up to rounding.

    Only the keys and values are projected at every position (LN1 and two of the four
    projections); the query, the attention weights, the output projection and the feed-forward
    layer run at the P positions. A transformer's last block needs its output only where a label
    is counted: on RecBole's samples (a window ending at every item, its last label counted), one
    position of each window's L, so this is about a sixth of `branch`'s work there
    (tests/test_counted.py).
    """
    mha = self.attention
    q_all = self.norm1(x)                                                      # [B, L, C]
    if not mha._built_from_signature:  # noqa: SLF001  (its sublayers are built by its first call)
      mha._build_from_signature(query=q_all, value=q_all)  # noqa: SLF001
    rows = index[:, 0]
    key = tf.gather(mha._key_dense(q_all), rows)                 # noqa: SLF001  [P, L, H, D]
    value = tf.gather(mha._value_dense(q_all), rows)             # noqa: SLF001  [P, L, H, D]
    query = mha._query_dense(tf.gather_nd(q_all, index)[:, tf.newaxis])  # noqa: SLF001  [P, 1, H, D]
    length = tf.shape(x)[1]
    seen = tf.logical_and(                                                     # [P, L]
        tf.range(length, dtype=index.dtype)[tf.newaxis] <= index[:, 1:2],
        tf.gather(tf.cast(seq_mask[..., 0], tf.bool), rows))
    a, _ = mha._compute_attention(query, key, value, seen[:, tf.newaxis], training)  # noqa: SLF001
    # [P, 1, C] from here: the layers were built for rank 3 (`branch`'s [B, L, C]).
    a = mha._output_dense(a)                                     # noqa: SLF001  [P, 1, C]
    item = tf.gather_nd(seq_mask, index)[:, tf.newaxis]                        # [P, 1, 1]
    a = self.alpha * self.drop(a, training=training) * item
    h = self.outer(self.drop(self.inner(self.norm2(tf.gather_nd(x, index)[:, tf.newaxis] + a)),
                             training=training))
    h = self.alpha * self.drop(h, training=training)
    self.built = True
    return ((a + h) * item)[:, 0]

  def call(self, x: tf.Tensor, seq_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    """x: [B, L, C], seq_mask: [B, L, 1] float (1 = item, 0 = padding) -> [B, L, C]."""
    return x + self.branch(x, seq_mask, training=training)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "num_heads": self.num_heads,
            "inner_size": self.inner_size, "dropout": self.dropout, "epsilon": self.epsilon,
            "activation": self.activation}
