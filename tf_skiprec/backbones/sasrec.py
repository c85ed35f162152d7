"""SASRec backbone: item and position embeddings, a stack of causal self-attention residual
blocks (tf_skiprec/attention.py), and a softmax head, with SkipRec's skippable residuals.

Kang and McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018). The names are those of
every backbone (tf_skiprec/backbones/__init__.py), so the model, the policy and the losses use it
as they use NextItNet+.

Positions are counted from the END of the window (the newest item has position 0), where SASRec
counts them from the start of its padded window. A history then gets the same position
embeddings however much left padding it has, so a left-padded history scores as the unpadded one
(padded keys are never attended to, and padded steps stay zero).

`model.backbone = "sasrec"`; its blocks' cost is tf_skiprec/compute.py's attention_block_flops
and the export's copy of a block is tf_skiprec/export/frozen.py's FrozenAttentionBlock.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tf_skiprec.backbones.stack import SkippableStack
from tf_skiprec.attention import AttentionBlock


@keras.utils.register_keras_serializable(package="tf_skiprec")
class SASRec(SkippableStack):
  """Item ids [B, L] -> hidden states [B, L, C]; `logits` maps hidden states to [.., V]."""

  def __init__(self, vocab_size: int, max_len: int, channels: int = 64, num_blocks: int = 2,
               num_heads: int = 2, inner_size: int | None = None, dropout: float = 0.0,
               embedding_dropout: float = 0.0, tie_embeddings: bool = False,
               activation: str = "relu", **kwargs):
    super().__init__(**kwargs)
    self.init_embedding(vocab_size, channels, embedding_dropout, tie_embeddings)
    self.max_len = max_len
    self.num_blocks = num_blocks
    self.num_heads = num_heads
    self.inner_size = inner_size or channels
    self.dropout = dropout
    self.activation = activation
    self.position_embedding = keras.layers.Embedding(
        max_len, channels, embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="position_embedding")
    self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")
    self.blocks = [AttentionBlock(channels, num_heads, self.inner_size, dropout=dropout,
                                  activation=activation, name=f"block_{i}")
                   for i in range(num_blocks)]
    # Untied, the norm before the softmax has no gamma or beta: the softmax's kernel W and bias
    # b absorb them exactly (W^T (gamma * n + beta) + b = (gamma * W)^T n + (W^T beta + b)), so
    # they would only re-parameterise it (tests/test_sasrec.py). Tied, the kernel is the item
    # table, and they stay.
    self.head_norm = keras.layers.LayerNormalization(
        epsilon=1e-6, center=tie_embeddings, scale=tie_embeddings, name="head_norm")
    self.init_softmax()

  def embed(self, item_ids: tf.Tensor, training: bool | None = None):
    """item_ids [B, L] (L <= max_len) -> (x [B, L, C] with padding rows zeroed, seq_mask
    [B, L, 1]). x = LN(item embedding + position embedding), positions from the end."""
    seq_mask = tf.cast(tf.not_equal(item_ids, 0), self.compute_dtype)[..., tf.newaxis]
    if item_ids.shape[1] is not None and item_ids.shape[1] > self.max_len:
      raise ValueError(f"a history window of {item_ids.shape[1]} items: this SASRec has position "
                       f"embeddings for {self.max_len}. Fix: keep the last {self.max_len} items "
                       "(data.max_len), or build it with a larger max_len.")
    length = tf.shape(item_ids)[1]
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        length, self.max_len, message=f"SASRec: history window above its {self.max_len} "
        "positions")]):
      length = tf.identity(length)
    positions = self.position_embedding(tf.range(length - 1, -1, -1))         # [L, C]
    x = self.embedding_norm(self.embedding(item_ids) + positions[tf.newaxis]) * seq_mask
    return self.embedding_drop(x, training=training), seq_mask

  def embed_variables(self) -> list[tf.Variable]:
    """The variables `embed` reads: the item table [V, C], the position table [max_len, C] and
    the embedding LayerNorm's gamma and beta [C]."""
    return [self.embedding.embeddings, self.position_embedding.embeddings,
            *self.embedding_norm.weights]

  def blocks_to_reach(self, distance: int) -> int | None:
    """The fewest blocks whose output at t can depend on the item at t - distance: one block
    attends to every earlier item of the window, so 1 (0 for the item itself); None beyond
    the window."""
    if distance >= self.max_len:
      return None
    return 0 if distance == 0 else 1

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "max_len": self.max_len,
            "channels": self.channels, "num_blocks": self.num_blocks,
            "num_heads": self.num_heads, "inner_size": self.inner_size,
            "dropout": self.dropout, "embedding_dropout": self.embedding_dropout,
            "tie_embeddings": self.tie_embeddings, "activation": self.activation}


def build(vocab_size: int, model, max_len: int) -> SASRec:
  """The registry's builder: SASRec from the ModelConfig fields in `model` (channels, num_blocks,
  num_heads, inner_size (0: channels), activation, dropout, embedding_dropout, tie_embeddings),
  with position
  embeddings for windows of max_len."""
  return SASRec(vocab_size, max_len, channels=model.channels, num_blocks=model.num_blocks,
                num_heads=model.num_heads, inner_size=model.inner_size or None,
                dropout=model.dropout, embedding_dropout=model.embedding_dropout,
                tie_embeddings=model.tie_embeddings, activation=model.activation,
                name="backbone")
