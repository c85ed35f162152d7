import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec import rewards
from tf_skiprec.policy import (PolicyNetwork, greedy_decisions, keep_at_most, keep_entropy,
                               keep_probability,
                               sampled_decisions, straight_through_decisions)


def _ids():
  ids = np.random.default_rng(0).integers(1, 30, size=(6, 10)).astype(np.int32)
  ids[0, :5] = 0
  return tf.constant(ids)


@pytest.mark.parametrize("body", ["cnn", "gru", "pool"])
def test_policy_gives_logits_per_user_and_block_and_starts_near_keep(body):
  policy = PolicyNetwork(30, 8, num_decisions=5, body=body, initial_keep_prob=0.9)
  logits = policy(_ids())
  assert logits.shape == (6, 5, 2)
  np.testing.assert_allclose(keep_probability(logits).numpy(), 0.9, atol=0.02)
  again = PolicyNetwork.from_config(policy.get_config())
  assert again.get_config() == policy.get_config()


@pytest.mark.parametrize("body, path", [("cnn", "policy/blocks/1/conv2/kernel"),
                                        ("gru", "policy/gru/cell/kernel"),
                                        ("pool", "policy/mlp/kernel")])
def test_the_body_registry_keeps_the_checkpoint_paths_of_earlier_work_directories(body, path,
                                                                                   tmp_path):
  """Each body's layers are tracked as the policy's own (policy/blocks/..., policy/gru/...), as
  before bodies were registered by name, so checkpoints written then still restore."""
  policy = PolicyNetwork(30, 8, num_decisions=5, body=body)
  policy(_ids())
  saved = tf.train.Checkpoint(policy=policy).save(str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(saved)]
  assert f"{path}/.ATTRIBUTES/VARIABLE_VALUE" in names, names
  assert not [n for n in names if "encoder" in n]
  again = PolicyNetwork(30, 8, num_decisions=5, body=body)
  again(_ids())
  tf.train.Checkpoint(policy=again).restore(saved).assert_existing_objects_matched()
  np.testing.assert_array_equal(again(_ids()).numpy(), policy(_ids()).numpy())


def test_straight_through_sample_is_one_hot_forward_with_finite_nonzero_gradients():
  policy = PolicyNetwork(30, 8, num_decisions=5, initial_keep_prob=0.5)
  weights = tf.constant([1.0, -2.0, 3.0, -4.0, 5.0])
  with tf.GradientTape() as tape:
    logits = policy(_ids())
    keep = straight_through_decisions(logits, temperature=1.0)
    loss = tf.reduce_sum(keep * weights)
  values = keep.numpy()
  assert set(np.unique(values)) <= {0.0, 1.0}       # exactly 0 or 1 in the forward pass
  assert 0 < values.mean() < 1                      # and really sampled (P(keep) = 0.5)
  grads = tape.gradient(loss, policy.trainable_variables)
  head = {v.name: g for v, g in zip(policy.trainable_variables, grads)}
  for g in grads:
    assert g is None or bool(tf.reduce_all(tf.math.is_finite(g)))
  head_kernel = [g for name, g in head.items() if "head" in name and "kernel" in name][0]
  assert float(tf.norm(head_kernel)) > 0


def test_straight_through_samples_follow_the_policy():
  logits = tf.math.log(tf.constant([[[0.8, 0.2], [0.1, 0.9]]]))  # P(keep) = 0.2 and 0.9
  keep = np.stack([straight_through_decisions(logits, 0.5).numpy()[0] for _ in range(400)])
  np.testing.assert_allclose(keep.mean(0), [0.2, 0.9], atol=0.07)


def test_greedy_decisions_are_deterministic_and_follow_the_threshold():
  policy = PolicyNetwork(30, 8, num_decisions=5)
  ids = _ids()
  a, b = greedy_decisions(policy(ids), 0.5), greedy_decisions(policy(ids), 0.5)
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  logits = tf.math.log(tf.constant([[[0.7, 0.3], [0.4, 0.6], [0.05, 0.95]]]))
  np.testing.assert_array_equal(greedy_decisions(logits, 0.5).numpy(), [[0, 1, 1]])
  np.testing.assert_array_equal(greedy_decisions(logits, 0.9).numpy(), [[0, 0, 1]])
  np.testing.assert_array_equal(greedy_decisions(logits, 0.0).numpy(), [[1, 1, 1]])
  even = tf.zeros([1, 2, 2])  # P(keep) = 0.5 exactly: kept at threshold 0.5 (P >= t)
  np.testing.assert_array_equal(greedy_decisions(even, 0.5).numpy(), [[1, 1]])


def test_keep_at_most_keeps_each_rows_m_most_probable_blocks_ties_to_the_lower_index():
  prob = tf.constant([[0.9, 0.2, 0.6, 0.6, 0.1],
                      [0.1, 0.2, 0.3, 0.4, 0.5],
                      [0.5, 0.5, 0.5, 0.5, 0.5]])
  m = tf.constant([2, 3, 4])                          # one cap per row
  np.testing.assert_array_equal(keep_at_most(prob, m).numpy(),
                                [[1, 0, 1, 0, 0],     # 0.9, then the first of the tied 0.6s
                                 [0, 0, 1, 1, 1],
                                 [1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(keep_at_most(prob, 0).numpy(), np.zeros((3, 5)))
  np.testing.assert_array_equal(keep_at_most(prob, 99).numpy(), np.ones((3, 5)))
  logits = tf.math.log(tf.stack([1 - prob, prob], axis=-1))
  # With the threshold: the blocks kept anyway, minus the least probable, down to m.
  np.testing.assert_array_equal(greedy_decisions(logits, 0.5, m).numpy(),
                                [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(greedy_decisions(logits, 0.5, None).numpy(),
                                greedy_decisions(logits, 0.5).numpy())


def test_sampled_decisions_log_prob():
  logits = tf.math.log(tf.constant([[[0.25, 0.75], [0.5, 0.5]]]))
  keep, log_prob = sampled_decisions(logits)
  p = np.where(keep.numpy()[0] == 1, [0.75, 0.5], [0.25, 0.5])
  np.testing.assert_allclose(log_prob.numpy()[0], np.log(p).sum(), rtol=1e-5)


def test_rl_reward_known_values():
  hit = tf.constant([True, True, True, False, False])
  usage = tf.constant([0.0, 0.5, 1.0, 0.5, 0.1])
  np.testing.assert_allclose(rewards.block_reward(hit, usage, gamma=1.0).numpy(),
                             [1.0, 0.75, 0.0, -1.0, -1.0])
  np.testing.assert_allclose(rewards.block_reward(hit, usage, gamma=0.5).numpy()[3:], [-0.5, -0.5])
  # The release's reward pays MORE for more blocks: 1 - (1 - u)^2.
  np.testing.assert_allclose(rewards.block_reward(hit, usage, kind="reference").numpy(),
                             [0.0, 0.75, 1.0, -1.0, -1.0])
  with pytest.raises(ValueError, match="policy.reward"):
    rewards.block_reward(hit, usage, kind="linear")


def test_keep_entropy_known_values():
  logits = tf.math.log(tf.constant([[[0.5, 0.5], [1e-9, 1.0], [0.25, 0.75]]]))  # [1, 3, 2]
  want = [np.log(2.0), 0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]
  np.testing.assert_allclose(keep_entropy(logits).numpy()[0], want, atol=1e-6)


def _separation_after_training(batch_norm: bool, steps: int = 25) -> float:
  """Two groups of users whose histories differ in 2 items out of 20; the policy is trained to
  keep block 0 for one group and skip it for the other. Returns the gap in P(keep) between them."""
  rng = np.random.default_rng(0)
  common = rng.integers(1, 20, size=(16, 18))
  special = np.where(np.arange(16)[:, None] < 8, 21, 22) * np.ones((16, 2), np.int64)
  ids = tf.constant(np.concatenate([common, special], axis=1), tf.int32)   # [16, 20]
  group = tf.constant(np.arange(16) < 8)
  tf.keras.utils.set_random_seed(0)
  policy = PolicyNetwork(30, 16, num_decisions=3, batch_norm=batch_norm)
  opt = tf.keras.optimizers.Adam(1e-2)
  for _ in range(steps):
    with tf.GradientTape() as tape:
      logp = tf.nn.log_softmax(policy(ids, training=True), axis=-1)[:, 0]  # block 0: [16, 2]
      loss = -tf.reduce_mean(tf.where(group, logp[:, 1], logp[:, 0]))
    grads = tape.gradient(loss, policy.trainable_variables)
    opt.apply_gradients(zip(grads, policy.trainable_variables))
  keep = keep_probability(policy(ids, training=False))[:, 0].numpy()
  return float(keep[:8].mean() - keep[8:].mean())


def test_batch_norm_lets_the_policy_tell_similar_users_apart():
  with_norm, without = _separation_after_training(True), _separation_after_training(False)
  assert with_norm > 0.4, with_norm  # measured 0.53 (and 0.12 without)
  assert with_norm > without + 0.25, (with_norm, without)


def test_policy_dilations_reach_the_config_and_set_how_far_the_policy_sees():
  from tf_skiprec.experiments import get_config
  from tf_skiprec.training.builders import build_model
  config = get_config("smoke")
  config.train.mode = "gumbel"
  config.policy.dilations = (1, 8)
  model = build_model(config, vocab_size=30)
  assert [b.dilation for b in model.policy.encoder.blocks] == [1, 8]
  # Changing the item 50 steps back changes P(keep) with dilations 1,8 (sees 6 + 48 = 54 steps),
  # not with the default 1,4 (sees 30).
  for dilations, sees in (((1, 8), True), ((1, 4), False)):
    policy = PolicyNetwork(30, 8, num_decisions=3, dilations=dilations, batch_norm=False)
    ids = np.random.default_rng(1).integers(1, 30, size=(1, 60)).astype(np.int32)
    policy(tf.constant(ids))
    for block in policy.encoder.blocks:
      block.alpha.assign(1.0)
    changed = ids.copy()
    changed[0, -51] = changed[0, -51] % 29 + 1
    # Only the last position: the mean pooling reads every position, so compare the body at t.
    x, mask = policy.embedding(tf.constant(ids)), tf.ones([1, 60, 1])
    x2 = policy.embedding(tf.constant(changed))
    for block in policy.encoder.blocks:
      x, x2 = block(x, mask), block(x2, mask)
    assert bool(tf.reduce_max(tf.abs(x[0, -1] - x2[0, -1])) > 1e-6) == sees, dilations


def test_the_pool_body_is_relu_of_the_mean_and_the_recent_mean_and_ignores_padding():
  from tf_skiprec.policy import PoolBody
  body = PoolBody(4, recent=3)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 4)).astype(np.float32)
  mask = np.ones((2, 6, 1), np.float32)
  mask[1, :4] = 0.0                              # row 1: 2 real items, left-padded
  x = x * mask
  out = body(tf.constant(x), tf.constant(mask)).numpy()
  kernel, bias = (w.numpy() for w in body.mlp.weights)
  for row, n in ((0, 6), (1, 2)):
    real = x[row, 6 - n:]
    features = np.concatenate([real.mean(0), real[-3:].mean(0)])
    np.testing.assert_allclose(out[row], np.maximum(features @ kernel + bias, 0), atol=1e-5)
  # The same history unpadded gives the same summary.
  alone = body(tf.constant(x[1:, 4:]), tf.constant(mask[1:, 4:])).numpy()
  np.testing.assert_allclose(alone[0], out[1], atol=1e-6)
