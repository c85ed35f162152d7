import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from conftest import set_alphas
from tf_skiprec.backbones.nextitnet import NextItNet, dilation_schedule
from tf_skiprec.layers import ResidualBlock


def _backbone(**kw):
  args = dict(vocab_size=30, channels=8, num_blocks=4, dilations=(1, 4))
  args.update(kw)
  net = NextItNet(**args)
  net(tf.zeros([1, 12], tf.int32))
  set_alphas(net, 0.7)
  return net


def _ids(batch=3, length=12, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 30, size=(batch, length)).astype(np.int32)
  ids[0, :4] = 0  # a left-padded row
  return tf.constant(ids)


def test_dilation_schedule():
  assert dilation_schedule(5, (1, 4)) == [1, 4, 1, 4, 1]
  assert dilation_schedule(3, (1, 2, 4)) == [1, 2, 4]


def test_causal_changing_item_t_never_changes_outputs_before_t():
  net = _backbone()
  ids = _ids()
  base = net(ids).numpy()
  for t in (4, 7, 11):
    changed = ids.numpy().copy()
    changed[:, t] = (changed[:, t] % 29) + 1  # another real item
    out = net(tf.constant(changed)).numpy()
    np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
    assert np.abs(out[:, t] - base[:, t]).max() > 1e-4  # and position t does see it


def test_mask_of_ones_equals_no_mask():
  net = _backbone()
  ids = _ids()
  np.testing.assert_allclose(net(ids, block_mask=tf.ones([3, 4])).numpy(), net(ids).numpy(),
                             atol=1e-6)


def test_mask_of_zeros_gives_embedding_path():
  net = _backbone()
  ids = _ids()
  out = net(ids, block_mask=tf.zeros([3, 4])).numpy()
  expected = net.embedding(ids).numpy() * (ids.numpy() != 0)[..., None]
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert np.abs(net(ids).numpy() - expected).max() > 1e-3  # the blocks do change the output


def test_mask_mixes_per_row():
  net = _backbone()
  ids = _ids()
  mask = tf.constant([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], tf.float32)
  out = net(ids, block_mask=mask).numpy()
  # Row 0 by hand: x + a0 F0(x), skip 1, + a2 F2, skip 3.
  x, seq = net.embed(ids[:1])
  for i in (0, 2):
    x = x + net.blocks[i].branch(x, seq)
  np.testing.assert_allclose(out[0], x.numpy()[0], atol=1e-5)


def test_at_inference_a_block_no_row_keeps_is_not_run_and_the_result_is_bit_identical():
  net = _backbone()
  ids = _ids()
  mask = tf.constant([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]], tf.float32)   # block 1, 3: none
  trained = net(ids, block_mask=mask, training=True).numpy()    # every block computed, masked
  inferred = net(ids, block_mask=mask, training=False).numpy()
  np.testing.assert_array_equal(inferred, trained)                  # x + 0 = x: bit for bit
  # Proof that block 1 does not run at inference: with NaN weights, masking still reads them
  # (NaN * 0 = NaN), skipping does not.
  conv = net.blocks[1].conv1.kernel
  conv.assign(tf.fill(conv.shape, float("nan")))
  assert np.isnan(net(ids, block_mask=mask, training=True).numpy()).any()
  np.testing.assert_array_equal(net(ids, block_mask=mask, training=False).numpy(), inferred)
  assert np.isnan(net(ids, block_mask=tf.ones([3, 4]), training=False).numpy()).all()


def test_left_padding_does_not_change_outputs():
  net = _backbone()
  history = np.array([[5, 9, 3, 17]], np.int32)
  short = net(tf.constant(history)).numpy()[0, -1]
  padded = net(tf.constant(np.pad(history, ((0, 0), (8, 0))))).numpy()[0, -1]
  np.testing.assert_allclose(short, padded, atol=1e-5)


def test_score_never_ranks_padding():
  net = _backbone()
  scores = net.score_last(_ids()).numpy()
  assert scores.shape == (3, 30)
  assert (scores[:, 0] < -1e8).all() and (scores[:, 1:] > -1e8).all()


def test_tied_embeddings_logits():
  net = _backbone(tie_embeddings=True)
  h = tf.random.normal([2, 8])
  expected = h.numpy() @ net.embedding.embeddings.numpy().T + net.output_bias.numpy()
  np.testing.assert_allclose(net.logits(h).numpy(), expected, atol=1e-5)


def test_final_norm_logits_are_the_softmax_of_the_normalised_hidden_state():
  net = _backbone(final_norm=True)
  net.logits(tf.zeros([1, 8]))  # builds the head
  net.head_norm.gamma.assign(np.linspace(0.5, 2.0, 8).astype(np.float32))
  net.head_norm.beta.assign(np.linspace(-1.0, 1.0, 8).astype(np.float32))
  h = tf.random.normal([2, 5, 8]) * 3.0 + 1.0
  x = h.numpy()
  normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  normed = normed * net.head_norm.gamma.numpy() + net.head_norm.beta.numpy()
  expected = normed @ net.output_dense.kernel.numpy() + net.output_dense.bias.numpy()
  np.testing.assert_allclose(net.logits(h).numpy(), expected, atol=1e-4)
  # The scale of the hidden state no longer sets the scores' scale (what depth did without it).
  np.testing.assert_allclose(net.logits(h * 10.0).numpy(), net.logits(h).numpy(), atol=1e-3)
  assert [v.shape.as_list() for v in net.output_variables()] == [[8], [8], [8, 30], [30]]


def test_layer_configs_round_trip():
  block = ResidualBlock(16, kernel_size=5, dilation=4, dropout=0.1, name="b")
  again = ResidualBlock.from_config(block.get_config())
  assert again.get_config() == block.get_config()
  net = NextItNet(50, channels=8, num_blocks=3, kernel_size=2, dilations=(1, 2, 4), dropout=0.2,
                  embedding_dropout=0.1, tie_embeddings=True, final_norm=True)
  again = NextItNet.from_config(net.get_config())
  assert again.get_config() == net.get_config()
  serialized = keras.layers.serialize(net)
  assert keras.layers.deserialize(serialized).get_config() == net.get_config()


def test_save_and_load_keeps_outputs(tmp_path):
  net = _backbone()
  ids = _ids()
  inputs = keras.Input([12], dtype=tf.int32)
  model = keras.Model(inputs, net(inputs))
  path = os.path.join(tmp_path, "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(), atol=1e-6)


def test_128_blocks_train_loss_falls_and_gradients_finite():
  net = NextItNet(40, channels=8, num_blocks=128, dilations=(1, 4))
  rng = np.random.default_rng(0)
  ids = tf.constant(rng.integers(1, 40, size=(8, 10)), tf.int32)
  inputs, labels = ids[:, :-1], ids[:, 1:]
  net.score_last(inputs)  # builds every variable, the softmax included
  opt = keras.optimizers.Adam(1e-2)
  opt.build(net.trainable_variables)

  def step():  # eager: tracing a 128-block gradient costs more than a few eager steps
    with tf.GradientTape() as tape:
      logits = net.logits(net(inputs, training=True))
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, net.trainable_variables)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    opt.apply_gradients(zip(grads, net.trainable_variables))
    return loss, finite

  losses = []
  for _ in range(8):
    loss, finite = step()
    assert bool(finite)
    losses.append(float(loss))
  assert len(net.blocks) == 128
  assert losses[-1] < 0.9 * losses[0], losses  # measured: 3.69 -> 3.11 in 8 steps
  assert any(abs(float(b.alpha)) > 0 for b in net.blocks)  # the blocks themselves learn
