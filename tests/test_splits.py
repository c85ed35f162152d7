import numpy as np
import pytest

from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.interactions import Interactions
from tf_skiprec.data.pipeline import Pipelines
from tf_skiprec.data.splits import build_sequences, eval_windows, train_windows
from tf_skiprec.errors import DataError


def _log(rows, kinds=None):
  users, items, times = zip(*rows)
  return Interactions(np.array(users), np.array(items), np.array(times, float), "hand", kinds)


def test_id_map_orders_by_frequency_with_first_appearance_ties(tmp_path):
  m = IdMap.from_items(np.array(["b", "a", "c", "a", "c", "d"]))
  assert m.raw_ids.tolist() == ["a", "c", "b", "d"]  # a, c twice (a seen first), then b, d
  assert m.counts.tolist() == [2, 2, 1, 1]
  np.testing.assert_array_equal(m.encode(np.array([["d", "a"]])), [[4, 1]])
  assert m.decode(np.array([2, 3])).tolist() == ["c", "b"]
  np.testing.assert_array_equal(m.encode(np.array(["zz", "c"]), unknown="pad"), [0, 2])
  with pytest.raises(DataError, match="unknown item id 'zz'"):
    m.encode(np.array(["zz"]), where="request.history")
  m.save(str(tmp_path / "id_map.json"))
  assert IdMap.load(str(tmp_path / "id_map.json")) == m
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(DataError, match="bad.json:1"):
    IdMap.load(str(tmp_path / "bad.json"))


def test_leave_one_out_is_chronological_with_file_order_ties():
  rows = [("u1", "x", 3), ("u1", "y", 1), ("u1", "z", 2), ("u1", "w", 2), ("u1", "v", 9),
          ("u2", "x", 1), ("u2", "y", 2),                        # 2 interactions: dropped
          ("u3", "a", 5), ("u3", "b", 6), ("u3", "c", 7)]
  data = build_sequences(_log(rows))
  assert data.dropped_users == 1
  assert data.user_ids.tolist() == ["u1", "u3"]
  raw = data.id_map.decode(data.items)
  # u1 by time: y(1) z(2) w(2, after z in the file) x(3) v(9)
  assert raw[data.offsets[0]:data.offsets[1]].tolist() == ["y", "z", "w", "x", "v"]
  valid, test = eval_windows(data, "valid", 50), eval_windows(data, "test", 50)
  assert data.id_map.decode(valid.targets).tolist() == ["x", "b"]
  assert data.id_map.decode(test.targets).tolist() == ["v", "c"]
  assert valid.lengths.tolist() == [3, 1] and test.lengths.tolist() == [4, 2]


def test_windows_use_every_training_item_exactly_once_as_a_label():
  rng = np.random.default_rng(0)
  rows = []
  for u, n in enumerate([3, 4, 12, 13, 25, 40]):
    rows += [(f"u{u}", f"i{rng.integers(0, 30)}", t) for t in range(n)]
  data = build_sequences(_log(rows))
  max_len = 5
  windows = train_windows(data, max_len)
  pipe = Pipelines(data, max_len)
  batches = list(pipe.train(windows, 4, seed=0, epoch=0))
  labels_seen = {}
  for b in batches:
    inputs, labels = b["inputs"].numpy(), b["labels"].numpy()
    assert inputs.shape[1] == max_len
    np.testing.assert_array_equal(inputs[:, 1:], labels[:, :-1])  # labels = inputs shifted
    for row_in, row_lab in zip(inputs, labels):
      real = row_lab != 0
      assert (np.diff(real.astype(int)) >= 0).all()  # left padding only
      labels_seen.setdefault("n", 0)
      labels_seen["n"] += int(((row_lab != 0) & (row_in != 0)).sum())
  # Per user: training part = n - 2 items, of which all but the first are predicted once.
  expected = sum(max(n - 2 - 1, 0) for n in [3, 4, 12, 13, 25, 40])
  assert labels_seen["n"] == expected
  # And the windows, as index ranges, tile each user's training part exactly.
  for u in range(data.num_users):
    start, n_train = data.offsets[u], data.lengths[u] - 2
    mine = [(e, l) for e, l in zip(windows.ends, windows.lengths) if start <= e - l and e <= start + n_train]
    covered = np.zeros(n_train, int)
    for e, l in mine:
      covered[e - l - start + 1:e - start] += 1      # labels: every item of a window but its first
    assert (covered[1:] == 1).all() and (n_train < 1 or covered[0] == 0)


@pytest.mark.parametrize("stride", [1, 2, 3, 5])
def test_overlapping_windows_count_each_label_once_with_the_most_history(stride):
  rng = np.random.default_rng(1)
  sizes = [3, 4, 9, 12, 13, 25, 40]
  rows = []
  for u, n in enumerate(sizes):
    rows += [(f"u{u}", f"i{rng.integers(0, 30)}", t) for t in range(n)]
  data = build_sequences(_log(rows))
  max_len = 5
  windows = train_windows(data, max_len, stride)
  if stride == max_len:
    end_to_end = train_windows(data, max_len)
    np.testing.assert_array_equal(windows.ends, end_to_end.ends)
  for u in range(data.num_users):
    start, n_train = int(data.offsets[u]), int(data.lengths[u]) - 2
    counted = np.zeros(n_train, int)
    for e, l, c in zip(windows.ends, windows.lengths, windows.counted):
      if not (start <= e - l and e <= start + n_train):
        continue
      first = e - l == start
      for label in range(e - min(c, l - 1), e):            # absolute index of a counted label
        counted[label - start] += 1
        history = label - (e - l)                           # items before it in this window
        # The most history any window gives it: all of it (first window) or max_len - stride.
        assert history >= (label - start if first else max_len - stride), (u, label)
    assert (counted[1:] == 1).all() and (n_train < 1 or counted[0] == 0), (u, counted)
  # The pipeline zeroes the labels another window counts: an epoch counts each label once.
  seen = 0
  for b in Pipelines(data, max_len).train(windows, 4, seed=0, epoch=0):
    inputs, labels = b["inputs"].numpy(), b["labels"].numpy()
    shifted = inputs[:, 1:]
    np.testing.assert_array_equal(np.where(labels[:, :-1] != 0, shifted, 0), labels[:, :-1])
    seen += int(((labels != 0) & (inputs != 0)).sum())
  assert seen == sum(max(n - 3, 0) for n in sizes)
  if stride < max_len:                                       # overlap: more windows, same labels
    assert len(windows) > len(train_windows(data, max_len))


def test_a_window_stride_above_max_len_is_refused_with_the_fix():
  from tf_skiprec.errors import ConfigError
  from tf_skiprec.experiments import get_config
  config = get_config("smoke").override("train.window_stride=99")
  with pytest.raises(ConfigError, match=r"train.window_stride = 99 is above data.max_len.*Fix"):
    config.validate()


def test_history_is_truncated_to_the_last_max_len_items():
  rows = [("u", f"i{t}", t) for t in range(12)] + [("v", "i0", 0), ("v", "i1", 1), ("v", "i2", 2)]
  data = build_sequences(_log(rows))
  pipe = Pipelines(data, max_len=4)
  batch = next(iter(pipe.evaluation(eval_windows(data, "test", 4), 8)))
  hist = data.id_map.decode(np.maximum(batch["history"].numpy()[0], 1))
  assert hist.tolist() == ["i7", "i8", "i9", "i10"]
  assert data.id_map.decode(batch["target"].numpy()[:1]).tolist() == ["i11"]
  assert batch["history"].numpy()[1].tolist()[:2] == [0, 0]  # v: 2 history items, left-padded


def test_shuffle_depends_only_on_seed_and_epoch_so_skip_resumes_exactly():
  rows = [(f"u{u}", f"i{(u * 7 + t) % 13}", t) for u in range(20) for t in range(9)]
  data = build_sequences(_log(rows))
  pipe, windows = Pipelines(data, 4), train_windows(data, 4)
  full = [b["inputs"].numpy() for b in pipe.train(windows, 3, seed=5, epoch=2)]
  rest = [b["inputs"].numpy() for b in pipe.train(windows, 3, seed=5, epoch=2, skip_batches=4)]
  assert len(rest) == len(full) - 4
  for a, b in zip(full[4:], rest):
    np.testing.assert_array_equal(a, b)
  other = [b["inputs"].numpy() for b in pipe.train(windows, 3, seed=5, epoch=3)]
  assert any(not np.array_equal(a, b) for a, b in zip(full, other))


def test_pipelines_run_untuned_so_an_epochs_iterator_is_deleted_at_once():
  # With tf.data's autotuning on, deleting an epoch's iterator waited ~26 s (bench/input_teardown.py).
  rows = [(f"u{u}", f"i{(u * 7 + t) % 13}", t) for u in range(20) for t in range(9)]
  data = build_sequences(_log(rows))
  pipe, windows = Pipelines(data, 4), train_windows(data, 4)
  for ds in (pipe.train(windows, 3, seed=5, epoch=0), pipe.train(windows, 3, seed=5, epoch=0,
                                                                 budget_over="users"),
             pipe.evaluation(eval_windows(data, "valid", 4), 8)):
    assert ds.options().autotune.enabled is False


def test_too_few_users_or_items_is_a_clear_error():
  with pytest.raises(DataError, match=r"hand: too few users to split: 1 of 2"):
    build_sequences(_log([("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1)]))
  with pytest.raises(DataError, match="too few items to rank: 1"):
    build_sequences(_log([(u, "x", t) for u in "ab" for t in range(3)]))
  with pytest.raises(DataError, match="no interactions"):
    build_sequences(Interactions(np.array([], str), np.array([], str), np.array([]), "hand"))
