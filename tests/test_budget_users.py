"""policy.budget_over = "users" or "latest": SkipRec's budget term over user-balanced histories.

The training windows over-represent the users with long histories (one window per item with
train.window_stride=1), while validation, model selection, calibration and serving count one
history per user; with "users" the gumbel step's compute terms read the decisions on a second
batch of windows drawn with every user equally likely (data/pipeline.py, user_balanced), and
with "latest" on the same users' validation histories themselves (user_latest).
"""

import numpy as np
import pytest
import tensorflow as tf

from test_splits import _log
from tf_skiprec.config import Config
from tf_skiprec.config_rules import problems
from tf_skiprec.data.pipeline import (Pipelines, _gather, budget_histories, user_balanced,
                                      user_latest)
from tf_skiprec.data.splits import Windows, build_sequences, eval_windows, train_windows
from tf_skiprec.experiments import get_config
from tf_skiprec.training import builders, run


def _skewed_data(lengths=(6, 12, 60)):
  """Users u0, u1, u2 with these many interactions (windows of 5 every item: 1, 6 and 54)."""
  rows = [(f"u{u}", f"i{(u * 5 + t) % 17}", t) for u, n in enumerate(lengths) for t in range(n)]
  return build_sequences(_log(rows))


def test_training_windows_know_their_users_in_order():
  data = _skewed_data()
  windows = train_windows(data, 4, stride=1)
  counts = np.bincount(windows.users, minlength=data.num_users)
  # n - 2 training items: the first window holds 5 of them, then one window per later item.
  np.testing.assert_array_equal(counts, [max(1, n - 2 - 4) for n in data.lengths])
  assert (np.diff(windows.users) >= 0).all()
  for end, user in zip(windows.ends, windows.users):     # each window inside its user's part
    assert data.offsets[user] < end <= data.offsets[user] + data.lengths[user] - 2


def test_user_balanced_draws_every_user_equally_and_their_windows_uniformly():
  data = _skewed_data()
  windows = train_windows(data, 4, stride=1)             # 1, 6 and 54 windows
  drawn = user_balanced(windows, 60_000, seed=3, epoch=1)
  share = np.bincount(windows.users[drawn], minlength=3) / len(drawn)
  np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)  # the windows' own: 0.02, 0.10, 0.89
  heavy = np.flatnonzero(windows.users == 2)
  within = np.bincount(drawn[np.isin(drawn, heavy)] - heavy[0], minlength=len(heavy))
  assert within.min() > 0.6 * within.mean() and within.max() < 1.4 * within.mean()
  np.testing.assert_array_equal(drawn, user_balanced(windows, 60_000, seed=3, epoch=1))
  assert not np.array_equal(drawn, user_balanced(windows, 60_000, seed=3, epoch=2))


def test_user_balanced_draws_only_a_users_longest_windows():
  """With a large stride a user's first window is shorter than its later ones; validation sees
  each user's latest history, as long as it is (up to max_len)."""
  windows = Windows(ends=np.array([3, 9, 14, 20, 25]), lengths=np.array([3, 5, 5, 4, 2], np.int32),
                    users=np.array([0, 0, 0, 1, 1]))
  drawn = user_balanced(windows, 4_000, seed=0, epoch=0)
  assert set(drawn) == {1, 2, 3}
  share = np.bincount(drawn, minlength=5) / len(drawn)
  np.testing.assert_allclose(share, [0, 0.25, 0.25, 0.5, 0], atol=0.03)


def test_user_balanced_refuses_windows_without_users():
  with pytest.raises(ValueError, match="users"):
    user_balanced(Windows(ends=np.array([3]), lengths=np.array([3], np.int32)), 4, 0, 0)


def test_user_balanced_batches_add_real_windows_and_leave_the_batch_unchanged():
  data = _skewed_data()
  max_len = 4
  windows = train_windows(data, max_len, stride=1)
  pipe = Pipelines(data, max_len)
  plain = list(pipe.train(windows, 8, seed=0, epoch=0))
  both = list(pipe.train(windows, 8, seed=0, epoch=0, budget_over="users"))
  assert len(plain) == len(both) and "budget_inputs" not in plain[0]
  every_input = {tuple(row) for b in plain for row in b["inputs"].numpy()}
  for a, b in zip(plain, both):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    extra = b["budget_inputs"].numpy()
    assert extra.shape == a["inputs"].shape
    assert {tuple(row) for row in extra} <= every_input    # each a training window's inputs
  # Row by row, the windows of the epoch's user-balanced draw.
  drawn = user_balanced(windows, len(windows), seed=0, epoch=0)
  budget = np.concatenate([b["budget_inputs"].numpy() for b in both])
  want = _gather(data.items, windows.ends[drawn], windows.lengths[drawn], max_len + 1)[:, :-1]
  np.testing.assert_array_equal(budget, want)
  # Resuming mid-epoch gives the same rows beside the same batches.
  rest = list(pipe.train(windows, 8, seed=0, epoch=0, budget_over="users", skip_batches=2))
  for a, b in zip(both[2:], rest):
    np.testing.assert_array_equal(a["budget_inputs"], b["budget_inputs"])


def test_user_latest_draws_the_same_users_each_at_its_latest_window():
  windows = Windows(ends=np.array([14, 9, 3, 25, 20]), lengths=np.array([5, 5, 3, 2, 4], np.int32),
                    users=np.array([0, 0, 0, 1, 1]))
  drawn = user_latest(windows, 500, seed=4, epoch=2)
  assert set(drawn) == {0, 3}                 # the largest end of each user, wherever it is
  np.testing.assert_array_equal(windows.users[drawn],
                                windows.users[user_balanced(windows, 500, seed=4, epoch=2)])
  with pytest.raises(ValueError, match="users"):
    user_latest(Windows(ends=np.array([3]), lengths=np.array([3], np.int32)), 4, 0, 0)


@pytest.mark.parametrize("max_len,stride", [(4, 1), (6, 1), (6, 4), (20, 0)])
def test_latest_budget_rows_are_the_users_validation_histories(max_len, stride):
  """Row by row, the budget rows of "latest" are the histories validation scores (padded ones
  too, at max_len 6 and 20), of the users `user_balanced` draws (never one without a training
  window); the training batches are those of a run without them, and a resumed epoch gives the
  same rows."""
  data = _skewed_data((6, 12, 60, 9, 3))       # u4: one training item, so no window
  windows = train_windows(data, max_len, stride=stride)
  valid = eval_windows(data, "valid", max_len)
  ends, lengths = budget_histories(windows, 900, 1, 3, "latest", max_len)
  users = windows.users[user_balanced(windows, 900, seed=1, epoch=3)]
  np.testing.assert_array_equal(ends, valid.ends[users])
  np.testing.assert_array_equal(lengths, valid.lengths[users])
  assert set(users) == {0, 1, 2, 3}
  pipe = Pipelines(data, max_len)
  plain = list(pipe.train(windows, 2, seed=1, epoch=3))
  latest = list(pipe.train(windows, 2, seed=1, epoch=3, budget_over="latest"))
  for a, b in zip(plain, latest, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  users = windows.users[user_balanced(windows, len(windows), seed=1, epoch=3)]
  want = _gather(data.items, valid.ends[users], valid.lengths[users], max_len).numpy()
  got = np.concatenate([b["budget_inputs"].numpy() for b in latest])
  np.testing.assert_array_equal(got, want)
  assert (got[:, -1] > 0).all()               # each ends at its user's last training item
  rest = list(pipe.train(windows, 2, seed=1, epoch=3, budget_over="latest", skip_batches=1))
  np.testing.assert_array_equal(np.concatenate([b["budget_inputs"].numpy() for b in rest]),
                                got[len(latest[0]["inputs"]):])


def test_budget_histories_refuse_an_unknown_choice():
  windows = train_windows(_skewed_data(), 4, stride=1)
  with pytest.raises(ValueError, match="'users' or 'latest'"):
    budget_histories(windows, 4, 0, 0, "requests", 4)


class _PaddedKeeps:
  """A policy that keeps every block of a history that starts with padding and none of a full
  one (logits +-30)."""

  def __init__(self, num_blocks: int):
    self.num_blocks = num_blocks
    self.trainable_variables = []
    self.rows = []                                                                # per call

  def __call__(self, history, training=None):
    self.rows.append(int(history.shape[0]))
    padded = tf.cast(tf.equal(history[:, 0], 0), tf.float32)[:, tf.newaxis]       # [B, 1]
    keep = tf.tile(60.0 * padded - 30.0, [1, self.num_blocks])                   # [B, N]
    return tf.stack([-keep, keep], axis=-1)                                      # [B, N, 2]


def _gumbel_model(penalty=20.0, user_charge=0.0):
  config = get_config("smoke")
  config.train.mode = "gumbel"
  config.model.dropout = config.model.embedding_dropout = 0.0
  config.policy.penalty, config.policy.user_charge = penalty, user_charge
  model = builders.build_model(config, vocab_size=61)
  model.policy = _PaddedKeeps(config.model.num_blocks)
  return model


def test_the_compute_terms_read_the_user_balanced_rows_and_the_loss_the_batch():
  rng = np.random.default_rng(0)
  seq = tf.constant(rng.integers(1, 60, size=(6, 21)), tf.int32)
  batch = {"inputs": seq[:, :-1], "labels": seq[:, 1:]}                 # full: no block kept
  padded = np.array(rng.integers(1, 60, size=(6, 20)), np.int32)
  padded[:, :5] = 0                                                     # padded: every block
  model = _gumbel_model()
  alone, stats_alone = model.compute_loss_and_stats(batch, training=True, seed=[1, 2])
  loss, stats = model.compute_loss_and_stats({**batch, "budget_inputs": tf.constant(padded)},
                                             training=True, seed=[1, 2])
  assert model.policy.rows == [6, 12]   # one call over both (one BatchNorm batch, one draw)
  assert float(stats_alone["usage"]) == 0.0 and "window_usage" not in stats_alone
  assert float(stats["usage"]) == 1.0 and float(stats["window_usage"]) == 0.0
  assert float(stats["rec_loss"]) == pytest.approx(float(stats_alone["rec_loss"]), rel=1e-6)
  budget = float(model.schedules.budget(0))
  assert float(loss - alone) == pytest.approx(20.0 * ((1 - budget) ** 2 - budget ** 2), rel=1e-4)
  # Evaluation's loss (greedy decisions) reads the batch alone.
  _, greedy = model.compute_loss_and_stats({**batch, "budget_inputs": tf.constant(padded)})
  assert float(greedy["usage"]) == 0.0


def test_the_user_charge_reads_the_user_balanced_rows_too():
  seq = tf.constant(np.random.default_rng(1).integers(1, 60, size=(4, 21)), tf.int32)
  padded = np.array(seq[:, :-1].numpy())
  padded[:, :3] = 0
  model = _gumbel_model(penalty=0.0, user_charge=1.0)
  _, stats = model.compute_loss_and_stats(
      {"inputs": seq[:, :-1], "labels": seq[:, 1:], "budget_inputs": tf.constant(padded)},
      training=True, seed=[0, 1])
  assert float(stats["user_charge"]) == pytest.approx(np.log1p(model.policy.num_blocks), rel=1e-6)


def test_an_unknown_budget_over_is_refused_with_the_choices():
  config = Config()
  config.policy.budget_over = "requests"
  found = problems(config)
  assert len(found) == 1 and "policy.budget_over" in found[0], found
  assert all(choice in found[0] for choice in ("windows", "users", "latest"))


@pytest.mark.parametrize("over", ["users", "latest"])
def test_a_run_with_the_budget_over_users_trains_on_the_balanced_rows(tmp_path, over):
  config = get_config("smoke")
  config.train.mode, config.train.epochs = "gumbel", 1
  config.train.window_stride = 1
  config.policy.budget_over = over
  run(config, str(tmp_path / "run"))
  logged = set()
  for path in (tmp_path / "run" / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      logged.update(value.tag for value in event.summary.value)
  assert "train/epoch_window_usage" in logged and "train/epoch_usage" in logged
