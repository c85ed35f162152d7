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
Conv1D and unfused LayerNormalization), and as `AttentionBlock.branch(training=False)` up to the
order of the products (the query, key and value projections are one [C, 3C] product here), so
outputs agree to float rounding; tf_skiprec.export checks the reloaded export against the
in-memory model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_skiprec.attention import ACTIVATIONS, AttentionBlock
from tf_skiprec.layers import ResidualBlock


def _block_function(residual, channels: int, dtype) -> tf.types.experimental.GenericFunction:
  """`residual` as one tf.function over (x [B, L, C], seq_mask [B, L, 1]), called from every path
  of every signature: the SavedModel stores its constants once (TensorFlow inlines the calls
  when it loads the model)."""
  return tf.function(residual, input_signature=[
      tf.TensorSpec([None, None, channels], dtype, name="x"),
      tf.TensorSpec([None, None, 1], dtype, name="seq_mask")])


def _layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
  """Layer normalisation over channels, as Keras 2's unfused LayerNormalization: [..., C]."""
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


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
    self.run = _block_function(self._residual, self.channels, self.dtype)

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
    return _layer_norm(x, gamma, beta, self.epsilon)


class FrozenAttentionBlock:
  """A snapshot of a trained AttentionBlock (tf_skiprec/attention.py): `branch` builds its ops with
  the weights inline and `run(x [B, L, C], seq_mask [B, L, 1]) -> x + branch(x) [B, L, C]` is
  the block as a function. Build it when exporting.

  The query, key and value projections are one product with a [C, 3C] kernel (Keras's
  MultiHeadAttention runs three); the masked softmax adds -1e9 where a key is hidden, as Keras's.
  """

  def __init__(self, block: AttentionBlock):
    self.channels = block.channels
    self.num_heads = block.num_heads
    self.head_size = block.channels // block.num_heads
    self.epsilon = block.epsilon
    self.activation = ACTIVATIONS[block.activation]
    self.dtype = block.compute_dtype
    mha = block.attention
    # Keras's MultiHeadAttention stores the projections as [C, H, D] kernels, [H, D] biases,
    # and the output as [H, D, C], [C].
    projections = (mha._query_dense, mha._key_dense, mha._value_dense)  # noqa: SLF001
    qkv_kernel = np.concatenate(
        [d.kernel.numpy().reshape(self.channels, self.channels) for d in projections], axis=1)
    qkv_bias = np.concatenate([d.bias.numpy().reshape(self.channels) for d in projections])
    out = mha._output_dense  # noqa: SLF001
    self.weights = {
        "gamma1": block.norm1.gamma.numpy(), "beta1": block.norm1.beta.numpy(),
        "qkv_kernel": qkv_kernel, "qkv_bias": qkv_bias,                    # [C, 3C], [3C]
        "out_kernel": out.kernel.numpy().reshape(self.channels, self.channels),
        "out_bias": out.bias.numpy(),
        "gamma2": block.norm2.gamma.numpy(), "beta2": block.norm2.beta.numpy(),
        "inner_kernel": block.inner.kernel.numpy(), "inner_bias": block.inner.bias.numpy(),
        "outer_kernel": block.outer.kernel.numpy(), "outer_bias": block.outer.bias.numpy(),
        "alpha": block.alpha.numpy()}
    self.run = _block_function(self._residual, self.channels, self.dtype)

  def _residual(self, x: tf.Tensor, seq_mask: tf.Tensor) -> tf.Tensor:
    """x + F(x) (padded steps of F zeroed). x: [B, L, C]; seq_mask: [B, L, 1]."""
    return x + self.branch(x, seq_mask)

  def branch(self, x: tf.Tensor, seq_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
    """F(x) = a + alpha * FFN(LN2(x + a)), a = alpha * Attention(LN1(x)), padded steps zeroed.
    x: [B, L, C]; seq_mask: [B, L, 1] -> [B, L, C]."""
    del training  # inference only: dropout is the identity
    w = {name: tf.constant(value, dtype=self.dtype) for name, value in self.weights.items()}
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    q = _layer_norm(x, w["gamma1"], w["beta1"], self.epsilon)
    qkv = tf.matmul(q, w["qkv_kernel"]) + w["qkv_bias"]                            # [B, L, 3C]
    qkv = tf.reshape(qkv, [batch, length, 3, self.num_heads, self.head_size])
    qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])                                        # [3, B, H, L, D]
    query = qkv[0] * (1.0 / float(np.sqrt(self.head_size)))
    scores = tf.matmul(query, qkv[1], transpose_b=True)                             # [B, H, L, L]
    visible = tf.cast(AttentionBlock.attention_mask(seq_mask), self.dtype)          # [B, L, L]
    scores += (1.0 - visible[:, tf.newaxis]) * -1e9
    context = tf.matmul(tf.nn.softmax(scores), qkv[2])                              # [B, H, L, D]
    context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch, length, self.channels])
    a = w["alpha"] * (tf.matmul(context, w["out_kernel"]) + w["out_bias"]) * seq_mask
    h = _layer_norm(x + a, w["gamma2"], w["beta2"], self.epsilon)
    h = self.activation(tf.matmul(h, w["inner_kernel"]) + w["inner_bias"])
    h = w["alpha"] * (tf.matmul(h, w["outer_kernel"]) + w["outer_bias"])
    return (a + h) * seq_mask


# The frozen copy of each kind of residual block: a backbone with another kind adds its own here.
FROZEN_BLOCKS = {ResidualBlock: FrozenResidualBlock, AttentionBlock: FrozenAttentionBlock}


def freeze_block(block):
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
