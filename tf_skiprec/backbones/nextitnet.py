"""NextItNet+ backbone (`model.backbone = "nextitnet"`): item embedding, a stack of dilated causal
convolutional residual blocks, and a softmax head.

Yuan et al., "A Simple Convolutional Generative Network for Next Item Recommendation" (WSDM
2019), with ReZero residuals as in SkipRec (Chen et al., AAAI 2021). The optional per-block mask
implements SkipRec's skipping semantics, x_{i+1} = x_i + m_i * alpha_i * F_i(x_i).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tf_skiprec.backbones.stack import SkippableStack
from tf_skiprec.layers import ResidualBlock


def dilation_schedule(num_blocks: int, pattern) -> list[int]:
  """The pattern repeated over the blocks: (1, 4) -> [1, 4, 1, 4, ...] (num_blocks entries)."""
  pattern = [int(d) for d in pattern]
  if not pattern or min(pattern) < 1:
    raise ValueError(f"dilations must be positive integers, got {pattern}")
  return [pattern[i % len(pattern)] for i in range(num_blocks)]


@keras.utils.register_keras_serializable(package="tf_skiprec")
class NextItNet(SkippableStack):
  """Item ids [B, L] -> hidden states [B, L, C]; `logits` maps hidden states to [.., V]."""

  def __init__(self, vocab_size: int, channels: int = 64, num_blocks: int = 8,
               kernel_size: int = 3, dilations=(1, 4), dropout: float = 0.0,
               embedding_dropout: float = 0.0, tie_embeddings: bool = False,
               final_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.init_embedding(vocab_size, channels, embedding_dropout, tie_embeddings)
    self.num_blocks = num_blocks
    self.kernel_size = kernel_size
    self.dilations = tuple(int(d) for d in dilations)
    self.dropout = dropout
    self.final_norm = final_norm
    self.blocks = [
        ResidualBlock(channels, kernel_size, d, dropout=dropout, name=f"block_{i}")
        for i, d in enumerate(dilation_schedule(num_blocks, self.dilations))]
    if final_norm:
      self.head_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")
    self.init_softmax()

  def embed(self, item_ids: tf.Tensor, training: bool | None = None):
    """item_ids [B, L] -> (x [B, L, C] with padding rows zeroed, seq_mask [B, L, 1])."""
    seq_mask = tf.cast(tf.not_equal(item_ids, 0), self.compute_dtype)[..., tf.newaxis]
    x = self.embedding(item_ids) * seq_mask
    return self.embedding_drop(x, training=training), seq_mask

  @property
  def receptive_field(self) -> int:
    return 1 + sum(b.receptive_field - 1 for b in self.blocks)

  def blocks_to_reach(self, distance: int) -> int | None:
    """The fewest blocks whose output at position t can depend on the item at t - distance (None
    if no subset reaches it). A block of dilation d has taps at d * (a + 2b), a, b in
    0..kernel_size-1 (its two convolutions, of dilation d and 2d), so a subset of blocks sees
    exactly the sums of one tap per block; a 0/1 knapsack over the blocks gives the minimum.
    With dilation 1 and kernel 3 every block adds 0..6 steps: ceil(distance / 6) blocks."""
    unreachable = self.num_blocks + 1
    fewest = [0] + [unreachable] * distance                 # fewest[o]: blocks to reach offset o
    for block in self.blocks:
      k, d = block.kernel_size, block.dilation
      taps = sorted({d * (a + 2 * b) for a in range(k) for b in range(k)} - {0})
      fewest = [min([fewest[o]] + [fewest[o - tap] + 1 for tap in taps if tap <= o])
                for o in range(distance + 1)]
    return fewest[distance] if fewest[distance] < unreachable else None

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "channels": self.channels,
            "num_blocks": self.num_blocks, "kernel_size": self.kernel_size,
            "dilations": list(self.dilations), "dropout": self.dropout,
            "embedding_dropout": self.embedding_dropout, "tie_embeddings": self.tie_embeddings,
            "final_norm": self.final_norm}


def build(vocab_size: int, model, max_len: int) -> NextItNet:
  """The registry's builder: NextItNet from the ModelConfig fields in `model` (any window: the
  convolutions do not depend on max_len)."""
  del max_len
  return NextItNet(vocab_size, channels=model.channels, num_blocks=model.num_blocks,
                   kernel_size=model.kernel_size, dilations=model.dilations,
                   dropout=model.dropout, embedding_dropout=model.embedding_dropout,
                   tie_embeddings=model.tie_embeddings, final_norm=model.final_norm,
                   name="backbone")
