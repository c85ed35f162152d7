"""NextItNet+ residual block: dilated causal convolutions, LayerNorm, ReLU and a ReZero scalar.

NextItNet: Yuan et al., "A Simple Convolutional Generative Network for Next Item
Recommendation", WSDM 2019. ReZero: Bachlechner et al., 2020. SkipRec: Chen et al., AAAI 2021.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="tf_skiprec")
class ResidualBlock(keras.layers.Layer):
  """x -> x + alpha * F(x), F = conv(d) -> LN -> ReLU -> conv(2d) -> LN -> ReLU.

  Both convolutions are causal (left-padded by (k - 1) * dilation), so output t sees inputs <= t.
  alpha is a trainable scalar initialised to 0 (ReZero): at initialisation every block is the
  identity, which is what lets 100+ blocks train.

  Padded time steps are kept at exactly zero: the branch output is multiplied by the sequence
  mask, so a history's outputs do not depend on how much left padding it has.
  """

  def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1,
               dropout: float = 0.0, epsilon: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.kernel_size = kernel_size
    self.dilation = dilation
    self.dropout = dropout
    self.epsilon = epsilon
    self.conv1 = keras.layers.Conv1D(channels, kernel_size, padding="causal",
                                     dilation_rate=dilation, name="conv1")
    self.norm1 = keras.layers.LayerNormalization(epsilon=epsilon, name="norm1")
    self.conv2 = keras.layers.Conv1D(channels, kernel_size, padding="causal",
                                     dilation_rate=2 * dilation, name="conv2")
    self.norm2 = keras.layers.LayerNormalization(epsilon=epsilon, name="norm2")
    self.drop = keras.layers.Dropout(dropout)
    # Created here, not in build(), because the backbone calls `branch` directly.
    self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros", trainable=True)

  def branch(self, x: tf.Tensor, seq_mask: tf.Tensor | None = None,
             training: bool | None = None) -> tf.Tensor:
    """alpha * F(x) with padded steps zeroed. x: [B, L, C]; seq_mask: [B, L, 1] -> [B, L, C]."""
    h = tf.nn.relu(self.norm1(self.conv1(x)))
    h = self.drop(h, training=training)
    h = tf.nn.relu(self.norm2(self.conv2(h)))
    h = self.drop(h, training=training)
    h = self.alpha * h
    if seq_mask is not None:
      h = h * seq_mask
    self.built = True  # called through `branch`, not __call__, by the backbone and the export
    return h

  def branch_at(self, x: tf.Tensor, seq_mask: tf.Tensor | None, index: tf.Tensor,
                training: bool | None = None) -> tf.Tensor:
    """alpha * F(x) at the positions `index` [P, 2] int (row, position) -> [P, C]: the whole
    branch, then those positions (a dilated convolution's output at t needs the previous
    layer's at t - 2d and t - 4d as well, so there is little to save)."""
    return tf.gather_nd(self.branch(x, seq_mask, training=training), index)

  def call(self, x: tf.Tensor, seq_mask: tf.Tensor | None = None,
           training: bool | None = None) -> tf.Tensor:
    """x: [B, L, C], seq_mask: optional [B, L, 1] float (1 = item, 0 = padding) -> [B, L, C]."""
    return x + self.branch(x, seq_mask, training=training)

  @property
  def receptive_field(self) -> int:
    return 1 + (self.kernel_size - 1) * 3 * self.dilation

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
            "dilation": self.dilation, "dropout": self.dropout, "epsilon": self.epsilon}
