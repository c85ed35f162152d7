"""What every backbone here shares: an embedding, N skippable residual blocks and a softmax head.

A subclass calls `init_embedding` first (the item table and its dropout), sets `blocks` (each
with `branch(x, seq_mask, training)`) and, for a LayerNorm before the softmax, `head_norm`, calls
`init_softmax` last (so the variables keep the order embedding, blocks, head), and defines
`embed`. This class runs the blocks with SkipRec's skipping semantics and scores with the head.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

NEG_INF = -1e9
# `counted` runs the last block at the counted positions alone when they are at most this share
# of a batch's positions (RecBole's samples: ~3%, a step 1.5x cheaper at 2 blocks; windows every
# 25 items: ~55%, where it would cost 1.6x the whole block; break-even near 20%).
SPARSE_SHARE = 0.125


class SkippableStack(keras.layers.Layer):
  """Item ids [B, L] -> hidden states [B, L, C]; `logits` maps hidden states to [.., V]."""

  def init_embedding(self, vocab_size: int, channels: int, embedding_dropout: float,
                     tie_embeddings: bool) -> None:
    """The item embedding (table [V, C], truncated normal 0.02) and its dropout."""
    self.vocab_size = vocab_size
    self.channels = channels
    self.embedding_dropout = embedding_dropout
    self.tie_embeddings = tie_embeddings
    self.embedding = keras.layers.Embedding(
        vocab_size, channels, embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="item_embedding")
    self.embedding_drop = keras.layers.Dropout(embedding_dropout)

  def init_softmax(self) -> None:
    """Untied, the softmax layer [C, V]; tied, `build` adds its bias [V] and the item table is
    its weights."""
    if not self.tie_embeddings:
      self.output_dense = keras.layers.Dense(self.vocab_size, name="softmax")

  def build(self, input_shape):
    if self.tie_embeddings:
      self.output_bias = self.add_weight(name="softmax_bias", shape=(self.vocab_size,),
                                         initializer="zeros")
    super().build(input_shape)

  def call(self, item_ids: tf.Tensor, block_mask: tf.Tensor | None = None,
           training: bool | None = None) -> tf.Tensor:
    """item_ids: [B, L] int; block_mask: optional [B, N] in {0, 1} -> hidden [B, L, C].

    A row whose mask is 0 for block i keeps x unchanged there (x + m * F(x)). In training every
    block is computed: the straight-through gradient of a skipped block's decision is F(x). At
    inference (training None or False) a block that no row of the batch keeps is not run
    (tf.cond), which leaves the result bit for bit the same (x + 0 = x) and saves its time in
    evaluation and the sweeps. Per-row conditional execution lives in the export.
    """
    x, seq_mask = self.embed(item_ids, training=training)
    return self._run_blocks(x, seq_mask, self.blocks, block_mask, training)

  def counted(self, item_ids: tf.Tensor, index: tf.Tensor, block_mask: tf.Tensor | None = None,
              training: bool | None = None) -> tf.Tensor:
    """The hidden states at the positions `index` only: item_ids [B, L] int, index [P, 2] int
    (row, position), block_mask optional [B, N] -> [P, C], tf.gather_nd(call(item_ids,
    block_mask, training), index) up to rounding.

    Every block but the last runs at every position (the next block's keys, or its
    convolution's taps, need them). The last runs only at `index` (`block.branch_at`) when the
    positions are at most SPARSE_SHARE of the batch's B * L, which is all a loss over the
    counted positions needs; with more, at every position, then gathered (`branch_at` copies
    each position's keys, so it costs more than the whole block there: bench/counted_step.py).
    Skipping is `call`'s: x + m * F(x), and at inference the last block is not run when no row
    of `index` keeps it. Call the stack once first (builders.build_model does): this method
    does not go through Keras's __call__, which builds it.
    """
    x, seq_mask = self.embed(item_ids, training=training)
    if not self.blocks:
      return tf.gather_nd(x, index)
    x = self._run_blocks(x, seq_mask, self.blocks[:-1], block_mask, training)
    last, at = self.blocks[-1], tf.gather_nd(x, index)                    # [P, C]
    keep = (None if block_mask is None
            else tf.cast(block_mask, x.dtype)[:, -1])                     # [B]

    def at_positions():
      change = last.branch_at(x, seq_mask, index, training=training)       # [P, C]
      return change if keep is None else change * tf.gather(keep, index[:, 0])[:, tf.newaxis]

    def everywhere():
      change = last.branch(x, seq_mask, training=training)                 # [B, L, C]
      return tf.gather_nd(change if keep is None else change * keep[:, tf.newaxis, tf.newaxis],
                          index)

    def run():
      few = (tf.cast(tf.shape(index)[0], tf.float32)
             <= SPARSE_SHARE * tf.cast(tf.size(item_ids), tf.float32))
      return at + tf.cond(few, at_positions, everywhere)

    inference = training is None or training is False
    if keep is None or not inference:
      return run()
    return tf.cond(tf.reduce_any(tf.gather(keep, index[:, 0]) > 0), run, lambda: at)

  def _run_blocks(self, x: tf.Tensor, seq_mask: tf.Tensor, blocks: list,
                  block_mask: tf.Tensor | None, training: bool | None) -> tf.Tensor:
    """x [B, L, C] through `blocks` (the first len(blocks) of self.blocks) with `call`'s
    skipping: x + m_i * F_i(x), m_i = block_mask[:, i] ([B, N]; None: every block)."""
    if block_mask is not None:
      block_mask = tf.cast(block_mask, x.dtype)
    inference = training is None or training is False
    for i, block in enumerate(blocks):
      if block_mask is None:
        x = x + block.branch(x, seq_mask, training=training)
        continue
      m = block_mask[:, i, tf.newaxis, tf.newaxis]                          # [B, 1, 1]

      def run(x=x, block=block, m=m):
        return x + block.branch(x, seq_mask, training=training) * m

      x = tf.cond(tf.reduce_any(m > 0), run, lambda x=x: x) if inference else run()
    return x

  def embed_variables(self) -> list[tf.Variable]:
    """The variables `embed` reads (the export keeps them as variables): the item table [V, C]."""
    return [self.embedding.embeddings]

  def output_variables(self) -> list[tf.Variable]:
    """The head's variables (the export keeps them as variables): its LayerNorm's [gamma [C],
    beta [C]] if it has one, then [kernel [C, V], bias [V]], or [bias [V]] when tied (the weights
    are then the item table)."""
    head_norm = getattr(self, "head_norm", None)  # not a class attribute: Keras would not track it
    norm = list(head_norm.weights) if head_norm is not None else []
    if self.tie_embeddings:
      return norm + [self.output_bias]
    return norm + [self.output_dense.kernel, self.output_dense.bias]

  def head_input(self, hidden: tf.Tensor) -> tf.Tensor:
    """hidden [..., C] -> what the softmax head reads [..., C]: LayerNorm(hidden) with a head
    norm (a pre-LN transformer's final norm), else hidden."""
    if getattr(self, "head_norm", None) is None:
      return hidden
    flat = tf.reshape(hidden, [-1, self.channels])        # the norm is built for rank 2
    return tf.reshape(self.head_norm(flat), tf.shape(hidden))

  def output_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
    """(weights [V, C], bias [V]) of the softmax head."""
    if self.tie_embeddings:
      return self.embedding.embeddings, self.output_bias
    return tf.transpose(self.output_dense.kernel), self.output_dense.bias

  def logits(self, hidden: tf.Tensor) -> tf.Tensor:
    """hidden [..., C] -> logits [..., V] (the padding id is not masked here)."""
    hidden = self.head_input(hidden)
    if self.tie_embeddings:
      return tf.linalg.matmul(hidden, self.embedding.embeddings, transpose_b=True) + self.output_bias
    return self.output_dense(hidden)

  def score_last(self, item_ids: tf.Tensor, block_mask: tf.Tensor | None = None) -> tf.Tensor:
    """Scores of the next item after each history: [B, L] -> [B, V], padding set to -1e9."""
    hidden = self(item_ids, block_mask=block_mask, training=False)[:, -1]  # [B, C]
    logits = self.logits(hidden)
    return tf.concat([tf.fill([tf.shape(logits)[0], 1], tf.cast(NEG_INF, logits.dtype)),
                      logits[:, 1:]], axis=1)
