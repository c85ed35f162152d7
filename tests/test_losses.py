import numpy as np
import tensorflow as tf

from tf_skiprec import losses
from tf_skiprec.backbones.nextitnet import NextItNet
from tf_skiprec.model import BackboneModel


def test_position_mask_needs_a_label_and_a_history():
  inputs = tf.constant([[0, 0, 5, 6], [0, 3, 4, 0]])
  labels = tf.constant([[0, 5, 6, 7], [3, 4, 0, 0]])
  np.testing.assert_array_equal(losses.position_mask(inputs, labels).numpy(),
                                [[False, False, True, True], [False, True, False, False]])


def test_full_softmax_loss_closed_form():
  logits = tf.constant([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
  got = losses.full_softmax_loss(logits, tf.constant([2, 1])).numpy()
  expected = [np.log(1 + np.e + np.e ** 2) - 2.0, np.log(np.e ** 3 + 2) - 0.0]
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sampled_softmax_with_every_item_as_a_negative_equals_softmax_without_padding():
  rng = np.random.default_rng(0)
  vocab, dim = 12, 4
  weights = tf.constant(rng.normal(size=(vocab, dim)), tf.float32)
  bias = tf.constant(rng.normal(size=vocab), tf.float32)
  hidden = tf.constant(rng.normal(size=(5, dim)), tf.float32)
  labels = tf.constant([1, 4, 7, 11, 2])
  # Every real item as a negative, expected counts 1 (log-Q correction 0): the label's own
  # copy is removed as an accidental hit, so this is exactly the softmax over ids 1..11.
  every = (tf.range(1, vocab, dtype=tf.int64), tf.ones([5, 1]), tf.ones([vocab - 1]))
  got = losses.sampled_softmax_loss(hidden, labels, weights, bias, vocab - 1, every).numpy()
  logits = hidden.numpy() @ weights.numpy()[1:].T + bias.numpy()[1:]
  expected = losses.full_softmax_loss(tf.constant(logits), labels - 1).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_sampled_softmax_reads_the_heads_layer_norm(monkeypatch):
  # model.final_norm: the sampled softmax must score LayerNorm(hidden), as the full softmax does.
  # With every real item as a negative (expected counts 1), it is the full softmax over 1..V-1.
  net = NextItNet(12, channels=4, num_blocks=2, final_norm=True)
  model = BackboneModel(net, loss="sampled", num_sampled=11)
  seq = tf.constant(np.random.default_rng(2).integers(1, 12, size=(3, 6)), tf.int32)
  batch = {"inputs": seq[:, :-1], "labels": seq[:, 1:]}
  model.score(batch["inputs"])
  net.head_norm.gamma.assign([3.0, 0.5, 2.0, 1.0])
  net.head_norm.beta.assign([1.0, -2.0, 0.0, 0.5])
  every = lambda labels, n, v: (tf.range(1, v, dtype=tf.int64), tf.ones([tf.shape(labels)[0], 1]),
                                tf.ones([v - 1]))
  monkeypatch.setattr(losses, "sample_negatives", every)
  got = float(model.compute_loss(batch, training=True))
  h = tf.reshape(net(batch["inputs"]), [-1, 4])
  logits = net.logits(h).numpy()[:, 1:]
  expected = losses.full_softmax_loss(tf.constant(logits), tf.reshape(batch["labels"], [-1]) - 1)
  np.testing.assert_allclose(got, float(tf.reduce_mean(expected)), rtol=1e-5)


def test_negatives_never_include_padding_and_follow_frequency():
  labels = tf.constant([3, 9])
  drawn = np.concatenate([losses.sample_negatives(labels, 5, 1000)[0].numpy() for _ in range(200)])
  assert drawn.min() >= 1 and drawn.max() <= 999
  assert np.mean(drawn <= 10) > np.mean(drawn > 500)  # Zipf: low (frequent) ids are drawn more
  sampled, true_expected, _ = losses.sample_negatives(labels, 5000, 20)
  assert sorted(sampled.numpy().tolist()) == list(range(1, 20))  # capped at V - 1
  assert true_expected.shape == (2, 1)


def test_sampled_training_lowers_the_full_softmax_loss():
  model = BackboneModel(NextItNet(50, channels=8, num_blocks=2), loss="sampled", num_sampled=10)
  rng = np.random.default_rng(0)
  seq = tf.constant(rng.integers(1, 50, size=(16, 9)) % 7 + 1, tf.int32)  # 7 items in use
  batch = {"inputs": seq[:, :-1], "labels": seq[:, 1:]}
  model.score(batch["inputs"])
  opt = tf.keras.optimizers.Adam(0.05)
  before = float(model.compute_loss(batch, training=False))
  for _ in range(20):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
  assert float(model.compute_loss(batch, training=False)) < before - 0.5


def test_block_drop_skips_blocks_at_random_in_training_only():
  from conftest import set_alphas
  net = NextItNet(50, channels=8, num_blocks=6)
  model = BackboneModel(net, block_drop=0.5)
  seq = tf.constant(np.random.default_rng(1).integers(1, 50, size=(4, 9)), tf.int32)
  batch = {"inputs": seq[:, :-1], "labels": seq[:, 1:]}
  model.score(batch["inputs"])
  set_alphas(net, 0.8)
  full = float(model.compute_loss(batch, training=False))
  assert float(model.compute_loss(batch, training=False)) == full  # evaluation: every block
  dropped = {round(float(model.compute_loss(batch, training=True)), 5) for _ in range(8)}
  assert len(dropped) > 1 and full not in dropped                   # training: random blocks


def test_prefix_block_drop_keeps_the_first_k_blocks():
  from tf_skiprec.model import _prefix_mask
  # Rows 0-1 are cut (draw[:, 0] < 0.5) after k = 1 + floor(draw[:, 1] * 5) blocks; rows 2-3 keep
  # all six.
  draw = tf.constant([[0.1, 0.0, .5, .5, .5, .5], [0.4, 0.99, .5, .5, .5, .5],
                      [0.5, 0.0, .5, .5, .5, .5], [0.9, 0.7, .5, .5, .5, .5]])
  np.testing.assert_array_equal(_prefix_mask(draw, 0.5).numpy(), [
      [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
  draws = tf.random.stateless_uniform([4000, 6], [1, 2])
  kept = _prefix_mask(draws, 0.5).numpy()
  assert ((np.diff(kept, axis=1) <= 0).all())                        # always a prefix
  k = kept.sum(axis=1)
  assert abs((k == 6).mean() - 0.5) < 0.03                           # P(cut) = block_drop
  assert set(np.unique(k[k < 6])) == {1, 2, 3, 4, 5}                 # every cut depth


def test_log_uniform_prefix_depths_follow_their_closed_form():
  from tf_skiprec.model import _prefix_mask
  n = 8
  u = (np.arange(20000, dtype=np.float32) + 0.5) / 20000            # a fine grid of draw[:, 1]
  draw = np.zeros([u.size, n], np.float32)
  draw[:, 1] = u                                                    # draw[:, 0] = 0 < rate: cut
  kept = _prefix_mask(tf.constant(draw), 0.5, log_uniform=True).numpy()
  assert (np.diff(kept, axis=1) <= 0).all()                         # always a prefix
  k = kept.sum(axis=1).astype(int)
  freq = np.bincount(k, minlength=n)[1:n] / u.size                  # P(k), k = 1..N-1
  expected = np.log(np.arange(2, n + 1) / np.arange(1, n)) / np.log(n)
  np.testing.assert_allclose(freq, expected, atol=2e-4)
  assert freq[0] > 2 * (1 / (n - 1))            # P(1) = 1/3 against uniform's 1/7
