"""Inference copies of the residual blocks with their weights baked in as constants, for export.

Why the export does not use the trained blocks' variables directly: in the one-user path every
block runs inside a functional conditional (a `Case` per group of blocks), and a conditional passes
everything its branches capture to every branch as inputs. With variables, each block's conditional
took its nine weight variables as inputs, so a skipped block still paid for about twenty ops
(arguments, dispatch) and the dispatch between the one-user and the batch path passed all N x 9 of
them. With the weights as constants created inside the branch, a block's conditional has one input,
the hidden state, and TensorFlow folds what depends on the weights alone (the kernels' reshapes)
when it loads the model. bench/serving_latency.py measures the difference.

The arithmetic is the same as `ResidualBlock.branch(training=False)` op for op (Keras 2's causal
Conv1D and unfused LayerNormalization), so outputs agree to float rounding; tf_skiprec.export
checks the reloaded export against the in-memory model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_skiprec.layers import ResidualBlock


class FrozenResidualBlock:
  """A snapshot of a trained ResidualBlock's weights; `branch` builds its ops with them inline and
  `run(x [B, L, C], seq_mask [B, L, 1]) -> x + branch(x) [B, L, C]` is the block as a function.

  Later changes to the block's variables are not seen: build it when exporting.
  """

  def __init__(self, block: ResidualBlock):
    self.channels = block.channels
    self.kernel_size = block.kernel_size
    self.dilation = block.dilation
    self.epsilon = block.epsilon
    self.dtype = block.compute_dtype
    self.weights = {
        name: np.asarray(variable.numpy())
        for name, variable in (
            ("kernel1", block.conv1.kernel), ("bias1", block.conv1.bias),
            ("gamma1", block.norm1.gamma), ("beta1", block.norm1.beta),
            ("kernel2", block.conv2.kernel), ("bias2", block.conv2.bias),
            ("gamma2", block.norm2.gamma), ("beta2", block.norm2.beta),
            ("alpha", block.alpha))}
    # One function per block, called from every path of every signature: the SavedModel stores
    # its constants once (TensorFlow inlines the calls when it loads the model).
    self.run = tf.function(self._residual, input_signature=[
        tf.TensorSpec([None, None, self.channels], self.dtype, name="x"),
        tf.TensorSpec([None, None, 1], self.dtype, name="seq_mask")])

  def _residual(self, x: tf.Tensor, seq_mask: tf.Tensor) -> tf.Tensor:
    """x + alpha * F(x) (padded steps of F zeroed). x: [B, L, C]; seq_mask: [B, L, 1]."""
    return x + self.branch(x, seq_mask)

  def branch(self, x: tf.Tensor, seq_mask: tf.Tensor | None = None,
             training: bool | None = None) -> tf.Tensor:
    """alpha * F(x) with padded steps zeroed. x: [B, L, C]; seq_mask: [B, L, 1] -> [B, L, C]."""
    del training  # inference only: dropout is the identity
    w = {name: tf.constant(value, dtype=self.dtype) for name, value in self.weights.items()}
    h = tf.nn.relu(self._norm(self._conv(x, w["kernel1"], w["bias1"], self.dilation),
                              w["gamma1"], w["beta1"]))
    h = tf.nn.relu(self._norm(self._conv(h, w["kernel2"], w["bias2"], 2 * self.dilation),
                              w["gamma2"], w["beta2"]))
    h = w["alpha"] * h
    return h if seq_mask is None else h * seq_mask

  def _conv(self, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, dilation: int) -> tf.Tensor:
    """Causal dilated convolution: [B, L, C] -> [B, L, C'] (left padding (k - 1) * dilation)."""
    x = tf.pad(x, [[0, 0], [(self.kernel_size - 1) * dilation, 0], [0, 0]])
    return tf.nn.bias_add(tf.nn.convolution(x, kernel, padding="VALID", dilations=dilation), bias)

  def _norm(self, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """Layer normalisation over channels: [B, L, C] -> [B, L, C]."""
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)


# The frozen copy of each kind of residual block: a backbone with another kind adds its own here.
FROZEN_BLOCKS = {ResidualBlock: FrozenResidualBlock}


def freeze_block(block) -> FrozenResidualBlock:
  """A trained block's frozen copy: `run(x [B, L, C], seq_mask [B, L, 1]) -> [B, L, C]`."""
  frozen = FROZEN_BLOCKS.get(type(block))
  if frozen is None:
    raise TypeError(f"no frozen copy for {type(block).__name__} blocks; add one to "
                    "tf_skiprec/export/frozen.py's FROZEN_BLOCKS")
  return frozen(block)


class FrozenPolicy:
  """An inference copy of a CNN-body PolicyNetwork: its residual blocks as FrozenResidualBlocks
  and its batch normalisation (moving statistics) and head as constants; the item embedding
  stays a variable (`embedding`, a Keras layer the caller tracks). Same arithmetic as
  `PolicyNetwork.call(training=False)`: item ids [B, L] -> logits [B, N, 2].
  """

  def __init__(self, policy):
    if policy.body != "cnn":
      raise ValueError(f"FrozenPolicy copies the cnn body, not {policy.body!r}")
    self.embedding = policy.embedding
    self.blocks = [FrozenResidualBlock(block) for block in policy.blocks]
    self.num_decisions = policy.num_decisions
    self.dtype = policy.compute_dtype
    norm = policy.norm
    self.norm = None if norm is None else {
        "mean": norm.moving_mean.numpy(), "variance": norm.moving_variance.numpy(),
        "gamma": norm.gamma.numpy(), "beta": norm.beta.numpy(), "epsilon": norm.epsilon}
    self.kernel, self.bias = policy.head.kernel.numpy(), policy.head.bias.numpy()

  def __call__(self, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    del training
    seq_mask = tf.cast(tf.not_equal(item_ids, 0), self.dtype)[..., tf.newaxis]      # [B, L, 1]
    x = self.embedding(item_ids) * seq_mask                                         # [B, L, C]
    for block in self.blocks:
      x = block.run(x, seq_mask)
    pooled = tf.math.divide_no_nan(tf.reduce_sum(x * seq_mask, axis=1),
                                   tf.reduce_sum(seq_mask, axis=1))                 # [B, C]
    if self.norm is not None:
      n = self.norm
      pooled = tf.nn.batch_normalization(pooled, tf.constant(n["mean"]),
                                         tf.constant(n["variance"]), tf.constant(n["beta"]),
                                         tf.constant(n["gamma"]), n["epsilon"])
    logits = tf.nn.bias_add(tf.matmul(pooled, tf.constant(self.kernel)), tf.constant(self.bias))
    return tf.reshape(logits, [-1, self.num_decisions, 2])
