"""tf_skiprec/rewards.py against closed forms."""

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec import rewards


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def test_likelihood_reward_is_each_windows_mean_log_likelihood_minus_the_compute_charge():
  # 4 counted positions over 3 windows: window 0 has two, window 1 one, window 2 none; window 3
  # has the 4th. log p(label) = log_softmax(logits)[label].
  logits = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.5]],
                    np.float32)                                          # [P=4, V=3]
  labels = np.array([2, 1, 0, 0], np.int32)
  windows = np.array([0, 0, 1, 3], np.int32)
  usage = np.array([1.0, 0.5, 0.25, 0.0], np.float32)                     # [B=4]
  ll = _log_softmax(logits)[np.arange(4), labels]                        # [P]
  expected = [(ll[0] + ll[1]) / 2 - 0.5 * 1.0,
              ll[2] - 0.5 * 0.5,            # log(1/3) - 0.25
              0.0 - 0.5 * 0.25,             # no position: the charge alone
              ll[3] - 0.0]
  got = rewards.likelihood_reward(tf.constant(logits), tf.constant(labels), tf.constant(windows),
                                  tf.constant(usage), compute_cost=0.5)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
  assert got.numpy()[1] == pytest.approx(np.log(1 / 3) - 0.25, abs=1e-6)
  free = rewards.likelihood_reward(tf.constant(logits), tf.constant(labels),
                                   tf.constant(windows), tf.constant(usage), compute_cost=0.0)
  np.testing.assert_allclose(free.numpy(), [(ll[0] + ll[1]) / 2, ll[2], 0.0, ll[3]], atol=1e-6)


def test_likelihood_reward_has_no_gradient():
  logits = tf.Variable([[0.0, 1.0], [2.0, 0.0]])
  usage = tf.Variable([0.5, 1.0])
  with tf.GradientTape() as tape:
    reward = rewards.likelihood_reward(logits, tf.constant([1, 0]), tf.constant([0, 1]), usage,
                                       compute_cost=1.0)
  assert all(g is None for g in tape.gradient(tf.reduce_sum(reward), [logits, usage]))


def test_the_top_k_rewards_keep_their_values():
  hit = tf.constant([True, True, False])
  usage = tf.constant([0.25, 0.75, 0.25])
  np.testing.assert_allclose(rewards.block_reward(hit, usage, gamma=2.0, kind="quadratic").numpy(),
                             [1 - 0.25 ** 2, 1 - 0.75 ** 2, -2.0])
  np.testing.assert_allclose(rewards.block_reward(hit, usage, gamma=2.0, kind="reference").numpy(),
                             [1 - 0.75 ** 2, 1 - 0.25 ** 2, -2.0])
  with pytest.raises(ValueError, match="'likelihood' is likelihood_reward"):
    rewards.block_reward(hit, usage, kind="likelihood")


def test_normalized_advantage_divides_by_the_batch_std_and_keeps_each_sign():
  # [1, -1, 3]: mean 1, population std sqrt((0 + 4 + 4) / 3) = sqrt(8 / 3) = 1.63299.
  got = rewards.normalized_advantage(tf.constant([1.0, -1.0, 3.0]), eps=0.0).numpy()
  np.testing.assert_allclose(got, np.array([1.0, -1.0, 3.0]) / np.sqrt(8 / 3), rtol=1e-6)
  np.testing.assert_allclose(got, [0.612372, -0.612372, 1.837117], rtol=1e-5)
  # Scale-free: the same advantages in other units give the same weights.
  np.testing.assert_allclose(rewards.normalized_advantage(tf.constant([1e-2, -1e-2, 3e-2])).numpy(),
                             got, rtol=1e-2)
  # A batch in which every sample equals its greedy decisions stays 0 (no division by zero).
  np.testing.assert_array_equal(rewards.normalized_advantage(tf.zeros([4])).numpy(), np.zeros(4))
