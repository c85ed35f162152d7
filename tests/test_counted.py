"""The hidden states at the counted positions only (backbone.counted, block.branch_at): the loss
needs the last block's output where a label is counted, so the last attention block runs its
query, attention and feed-forward layer there alone. Known answers: the whole stack's output at
those positions (values and gradients), the model's losses computed either way, and traces of
what the last block was given and whether it ran."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import set_alphas
from tf_skiprec.attention import AttentionBlock
from tf_skiprec.experiments import get_config
from tf_skiprec.layers import ResidualBlock
from tf_skiprec.training import builders

B, L, C = 5, 12, 16
C_SMOKE = get_config("smoke").model.channels


def _x_and_mask(seed=0):
  """x [B, L, C] zero on padding, seq_mask [B, L, 1]: rows left-padded by 0, 3, 7, 11 and 0."""
  rng = np.random.default_rng(seed)
  pad = np.array([0, 3, 7, 11, 0])
  mask = (np.arange(L)[None] >= pad[:, None]).astype(np.float32)[..., None]
  x = rng.normal(size=(B, L, C)).astype(np.float32) * mask
  return tf.constant(x), tf.constant(mask)


# Every position of row 0 (a history's first window counts all of its labels), the last of the
# others, and a padded position of row 2 (its output must be zero).
INDEX = tf.constant([[0, t] for t in range(L)] + [[1, L - 1], [2, 1], [2, L - 1], [3, L - 1],
                                                   [4, L - 1]], tf.int64)


@pytest.mark.parametrize("block", [
    lambda: AttentionBlock(C, num_heads=2, inner_size=32, activation="gelu"),
    lambda: ResidualBlock(C, kernel_size=3, dilation=2)])
def test_branch_at_is_the_branch_at_those_positions(block):
  block = block()
  x, mask = _x_and_mask()
  block.branch(x, mask)
  block.alpha.assign(0.8)
  expected = tf.gather_nd(block.branch(x, mask), INDEX).numpy()
  got = block.branch_at(x, mask, INDEX).numpy()
  assert np.abs(expected).max() > 0.1  # the branch does something
  np.testing.assert_allclose(got, expected, atol=1e-5)
  np.testing.assert_array_equal(got[L + 1], 0.0)  # the padded position


def test_the_attention_branch_at_a_position_ignores_the_future_and_the_padding():
  block = AttentionBlock(C, num_heads=2, inner_size=32)
  x, mask = _x_and_mask()
  block.branch(x, mask)
  block.alpha.assign(0.8)
  index = tf.constant([[0, 6], [2, 9]], tf.int64)
  before = block.branch_at(x, mask, index).numpy()
  rng = np.random.default_rng(1)
  noise = lambda shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731 (LN-visible)
  changed = x.numpy()
  changed[0, 7:] += noise((L - 7, C))   # after row 0's position 6
  changed[2, :7] += noise((7, C))       # row 2's padding (its mask still 0 there)
  after = block.branch_at(tf.constant(changed), mask, index).numpy()
  np.testing.assert_allclose(after, before, atol=1e-6)
  changed[0, 3] += noise(C)             # before it: the output moves
  moved = block.branch_at(tf.constant(changed), mask, index).numpy()
  assert np.abs(moved[0] - before[0]).max() > 1e-2


def _config(backbone, dropout=0.0, mode="pretrain", **policy):
  config = get_config("smoke")
  config.model.backbone = backbone
  config.model.num_blocks = 3
  config.model.dropout = dropout
  config.model.embedding_dropout = dropout
  config.train.mode = mode
  for k, v in policy.items():
    setattr(config.policy, k, v)
  return config


def _model(config):
  tf.keras.utils.set_random_seed(0)
  model = builders.build_model(config, vocab_size=61)
  set_alphas(model.backbone, 0.7)
  return model


def _batch(seed=0, many=False):
  """12 windows of 20: row 1 (9 of padding) counts its 11 labels (a history's first window), the
  others their last label only: 22 counted positions of 240, under stack.SPARSE_SHARE, so the
  last block runs at them alone. `many`: row 0 counts all of its 20 too (41, above it)."""
  rng = np.random.default_rng(seed)
  seq = rng.integers(1, 60, size=(12, 21))
  seq[1, :9] = 0                                   # left padding
  labels = seq[:, 1:].copy()
  labels[2:, :-1] = 0                              # the last label only
  if not many:
    labels[0, :-1] = 0
  return {"inputs": tf.constant(seq[:, :-1], tf.int32), "labels": tf.constant(labels, tf.int32)}


def _index(batch):
  return tf.where((batch["inputs"] != 0) & (batch["labels"] != 0))


KEEP = tf.constant([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]] * 2,
                   tf.float32)


@pytest.mark.parametrize("backbone", ["nextitnet", "sasrec"])
@pytest.mark.parametrize("block_mask", [None, KEEP])
@pytest.mark.parametrize("many", [False, True])
def test_counted_is_the_stack_at_the_counted_positions_values_and_gradients(backbone, block_mask,
                                                                             many):
  model = _model(_config(backbone))
  batch = _batch(many=many)
  index = _index(batch)
  assert int(tf.shape(index)[0]) == (41 if many else 22)
  variables = model.backbone.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    expected = tf.gather_nd(model.backbone(batch["inputs"], block_mask=block_mask,
                                           training=True), index)
    got = model.backbone.counted(batch["inputs"], index, block_mask=block_mask, training=True)
    target = tf.constant(np.random.default_rng(1).normal(size=got.shape), tf.float32)
    loss_expected = tf.reduce_sum(expected * target)
    loss_got = tf.reduce_sum(got * target)
  np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
  grads = list(zip(tape.gradient(loss_got, variables), tape.gradient(loss_expected, variables)))
  unused = [v.name for v, (g, _) in zip(variables, grads) if g is None]
  assert all("softmax" in name or "head_norm" in name for name in unused)  # the head's only
  for g_got, g_expected in grads:
    assert (g_got is None) == (g_expected is None)
    if g_got is None:
      continue
    np.testing.assert_allclose(tf.convert_to_tensor(g_got).numpy(),
                               tf.convert_to_tensor(g_expected).numpy(), atol=1e-4)
  inference = model.backbone.counted(batch["inputs"], index, block_mask=block_mask)
  np.testing.assert_allclose(inference.numpy(), expected.numpy(), atol=1e-5)


def _spy(layer, attribute):
  """Records the first argument's shape of each call of layer.<attribute>."""
  shapes, original = [], getattr(layer, attribute)

  def spied(x, *args, **kwargs):
    shapes.append(tuple(x.shape))
    return original(x, *args, **kwargs)

  setattr(layer, attribute, spied)
  return shapes


@pytest.mark.parametrize("many", [False, True])
def test_the_last_attention_block_runs_its_feed_forward_where_its_share_says(many):
  model = _model(_config("sasrec"))
  batch = _batch(many=many)
  index = _index(batch)
  blocks = model.backbone.blocks
  model.backbone.counted(batch["inputs"], index, training=True)  # builds every layer
  seen = [_spy(block.inner, "call") for block in blocks]
  model.backbone.counted(batch["inputs"], index, training=True)
  assert seen[0] == seen[1] == [(12, 20, C_SMOKE)]           # every position
  # 22 of 240 positions: the counted ones alone; 41 (above SPARSE_SHARE): every position.
  assert seen[2] == ([(12, 20, C_SMOKE)] if many else [(22, 1, C_SMOKE)])



def test_a_last_block_that_no_counted_row_keeps_is_not_run_at_inference():
  model = _model(_config("sasrec"))
  batch = _batch()
  index = _index(batch)
  last = model.backbone.blocks[-1]
  calls = []
  for name in ("branch_at", "branch"):
    original = getattr(last, name)
    setattr(last, name, lambda *a, original=original, name=name, **k: calls.append(name)
            or original(*a, **k))
  skip_last = tf.constant([[1, 1, 0]] * 12, tf.float32)
  got = model.backbone.counted(batch["inputs"], index, block_mask=skip_last)
  assert calls == []
  expected = tf.gather_nd(model.backbone(batch["inputs"], block_mask=skip_last), index)
  np.testing.assert_array_equal(got.numpy(), expected.numpy())
  calls.clear()
  model.backbone.counted(batch["inputs"], index, block_mask=KEEP)   # row 1 keeps it
  assert calls == ["branch_at"]


@pytest.mark.parametrize("backbone", ["nextitnet", "sasrec"])
@pytest.mark.parametrize("mode", ["pretrain", "gumbel"])
def test_the_losses_are_those_over_the_whole_stack(backbone, mode):
  model = _model(_config(backbone, mode=mode, distill_weight=1.0, initial_keep_prob=0.6))
  batch, seed = _batch(), tf.constant([3, 4])
  loss, stats = model.compute_loss_and_stats(batch, training=True, seed=seed, step=0)
  if mode == "pretrain":
    hidden = model.backbone(batch["inputs"], training=True)
    assert float(loss) == pytest.approx(float(model.position_loss(hidden, batch)), rel=1e-5)
    return
  from tf_skiprec import policy as policy_lib
  keep = policy_lib.straight_through_decisions(model.policy(batch["inputs"], training=True),
                                               model.schedules.temperature(0), seed)
  assert 0 < float(tf.reduce_mean(keep)) < 1
  hidden = model.backbone(batch["inputs"], block_mask=keep, training=True)
  assert float(stats["rec_loss"]) == pytest.approx(float(model.position_loss(hidden, batch)),
                                                   rel=1e-5)
  full = model.backbone(batch["inputs"], training=True)
  assert float(stats["full_rec_loss"]) == pytest.approx(float(model.position_loss(full, batch)),
                                                        rel=1e-5)


def test_a_fresh_attention_block_can_be_called_at_positions_first():
  block = AttentionBlock(C, num_heads=2, inner_size=32)
  x, mask = _x_and_mask()
  got = block.branch_at(x, mask, INDEX)      # builds the attention's sublayers
  block.alpha.assign(0.8)
  expected = tf.gather_nd(block.branch(x, mask), INDEX).numpy()
  np.testing.assert_allclose(block.branch_at(x, mask, INDEX).numpy(), expected, atol=1e-5)
  reference = AttentionBlock(C, num_heads=2, inner_size=32)
  reference.branch(x, mask)
  assert tuple(got.shape) == (int(INDEX.shape[0]), C)
  assert [v.shape for v in block.trainable_variables] == [
      v.shape for v in reference.trainable_variables]  # the same 17 variables, built once


def test_branch_at_drops_out_where_the_branch_does():
  block = AttentionBlock(C, num_heads=2, inner_size=32, dropout=0.3)
  x, mask = _x_and_mask()
  block.branch(x, mask)
  block.alpha.assign(0.8)
  seen = {"block": _spy_training(block.drop), "attention": _spy_training(
      block.attention._dropout_layer)}  # noqa: SLF001
  for training in (True, False):
    block.branch(x, mask, training=training)
    expected = {name: list(calls) for name, calls in seen.items()}
    for calls in seen.values():
      calls.clear()
    block.branch_at(x, mask, INDEX, training=training)
    assert seen == expected and len(expected["block"]) == 3, training
    for calls in seen.values():
      calls.clear()
  tf.keras.utils.set_random_seed(0)
  dropped = block.branch_at(x, mask, INDEX, training=True).numpy()
  assert np.abs(dropped - block.branch_at(x, mask, INDEX, training=False).numpy()).max() > 1e-3


def _spy_training(layer):
  """Records the `training` argument of each call of the Keras layer's `call`."""
  calls, original = [], layer.call

  def spied(inputs, training=None, **kwargs):
    calls.append(bool(training))
    return original(inputs, training=training, **kwargs)

  layer.call = spied
  return calls
