"""The recommender model: a NextItNet+ backbone behind TFRS's `compute_loss` contract."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tf_skiprec import losses
from tf_skiprec.backbone import NextItNet
from tf_skiprec.config import ModelConfig


class NextItNetModel(tfrs.models.Model):
  """Autoregressive next-item model: every counted position predicts the next item.

  `compute_loss` takes {"inputs": [B, L], "labels": [B, L]} (labels = inputs shifted by one)
  and returns the mean cross-entropy over positions with a label and a history.
  """

  def __init__(self, backbone: NextItNet, loss: str = "full", num_sampled: int = 1000, **kwargs):
    super().__init__(**kwargs)
    if loss not in ("full", "sampled"):
      raise ValueError(f"train.loss must be 'full' or 'sampled', got {loss!r}")
    self.backbone = backbone
    self.loss_kind = loss
    self.num_sampled = num_sampled

  @classmethod
  def from_config_dataclass(cls, config: ModelConfig, vocab_size: int, loss: str = "full",
                            num_sampled: int = 1000) -> "NextItNetModel":
    backbone = NextItNet(vocab_size, channels=config.channels, num_blocks=config.num_blocks,
                         kernel_size=config.kernel_size, dilations=config.dilations,
                         dropout=config.dropout, embedding_dropout=config.embedding_dropout,
                         tie_embeddings=config.tie_embeddings, name="backbone")
    return cls(backbone, loss=loss, num_sampled=num_sampled)

  def call(self, item_ids, block_mask=None, training=None):
    """item_ids [B, L] -> hidden [B, L, C]."""
    return self.backbone(item_ids, block_mask=block_mask, training=training)

  def compute_loss(self, inputs, training: bool = False, block_mask=None) -> tf.Tensor:
    """Mean next-item cross-entropy. inputs: {"inputs": [B, L], "labels": [B, L]} -> scalar."""
    hidden = self.backbone(inputs["inputs"], block_mask=block_mask, training=training)
    return self.position_loss(hidden, inputs, training=training)

  def position_loss(self, hidden, inputs, training: bool = False) -> tf.Tensor:
    """hidden [B, L, C] -> mean cross-entropy over the counted positions (scalar).

    The sampled softmax (train.loss="sampled") applies in training only; otherwise, and for
    every evaluation, the loss is over the full softmax.
    """
    mask = losses.position_mask(inputs["inputs"], inputs["labels"])  # [B, L]
    h = tf.boolean_mask(hidden, mask)                                   # [P, C]
    labels = tf.boolean_mask(inputs["labels"], mask)                    # [P]
    if self.loss_kind == "sampled" and training:
      weights, bias = self.backbone.output_weights()
      per_position = losses.sampled_softmax_loss(h, labels, weights, bias, self.num_sampled)
    else:
      per_position = losses.full_softmax_loss(self.backbone.logits(h), labels)
    return tf.math.divide_no_nan(tf.reduce_sum(per_position),
                                 tf.cast(tf.size(per_position), per_position.dtype))

  def score(self, history: tf.Tensor, block_mask=None) -> tf.Tensor:
    """history [B, L] (left-padded) -> scores of every item [B, V]; padding scores -1e9."""
    return self.backbone.score_last(history, block_mask=block_mask)

