"""The graded synthetic log (one group of users per context distance) and the fewest blocks that
see each group's context (backbone.blocks_to_reach), checked against the network itself."""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.backbones.nextitnet import NextItNet
from tf_skiprec.config import SyntheticConfig
from tf_skiprec.data import synthetic
from tf_skiprec.training import report
from tf_skiprec.training.end_of_run import min_blocks_by_kind

LAGS = (2, 8, 24, 48)


def _graded(**kwargs):
  values = dict(num_users=400, num_items=120, min_length=60, max_length=100, group_lags=LAGS,
                seed=3)
  values.update(kwargs)
  return synthetic.generate(SyntheticConfig(**values))


def _predictability(seqs, distance):
  """Fraction of items s_t (t >= distance) equal to the most common successor of s_{t-distance}
  over the group: ~theme_prob at the group's lag, ~chance elsewhere."""
  nxt = collections.defaultdict(collections.Counter)
  for seq in seqs:
    for t in range(distance, len(seq)):
      nxt[seq[t - distance]][seq[t]] += 1
  return sum(c.most_common(1)[0][1] for c in nxt.values()) / sum(sum(c.values())
                                                                 for c in nxt.values())


def test_graded_groups_are_recorded_and_deterministic():
  a, b = _graded(), _graded()
  np.testing.assert_array_equal(a.items, b.items)
  assert a.user_kinds == b.user_kinds
  counts = collections.Counter(a.user_kinds.values())
  assert sorted(counts) == ["lag02", "lag08", "lag24", "lag48"]   # sorted = in order of need
  assert min(counts.values()) > 70                                   # ~100 users each
  assert [synthetic.group_lag(k) for k in sorted(counts)] == list(LAGS)
  assert synthetic.group_lag("deep") is None


@pytest.mark.parametrize("lag", LAGS)
def test_each_group_depends_on_the_item_exactly_lag_steps_back(lag):
  log = _graded(theme_prob=0.85)
  seqs = [log.items[log.users == u] for u, k in log.user_kinds.items()
          if k == synthetic.group_name(lag)]
  assert _predictability(seqs, lag) > 0.8
  for closer in {1, lag // 2, lag - 1} - {0, lag}:
    assert _predictability(seqs, closer) < 0.45, closer   # nothing nearer says as much


def test_graded_lags_are_checked():
  with pytest.raises(ValueError, match="group_lags"):
    _graded(group_lags=(8, 8))
  with pytest.raises(ValueError, match="group_lags"):
    _graded(group_lags=(0, 8))


@pytest.mark.parametrize("dilations,expected", [
    ((1,), [0, 1, 2, 4, 8]),   # every block adds 0..6 steps: ceil(d / 6)
    ((1, 2), [0, 1, 2, 3, 5]),
    ((1, 4), [0, 1, 2, 2, 3]),
])
def test_blocks_to_reach_closed_forms(dilations, expected):
  net = NextItNet(50, channels=8, num_blocks=32, kernel_size=3, dilations=dilations)
  assert [net.blocks_to_reach(d) for d in (0, 1, 7, 23, 47)] == expected
  if dilations == (1,):
    assert all(net.blocks_to_reach(d) == math.ceil(d / 6) for d in range(0, 190))
    assert net.blocks_to_reach(193) is None   # 32 blocks see 192 steps back at most


@pytest.mark.parametrize("dilations", [(1,), (1, 2)])
def test_blocks_to_reach_is_what_the_network_sees(dilations):
  # Run the first k blocks only (the mask) and change the item `distance` steps before the last:
  # the last output changes iff those k blocks reach it (the DP over the first k blocks).
  tf.random.set_seed(0)
  net = NextItNet(40, channels=8, num_blocks=6, kernel_size=3, dilations=dilations)
  ids = tf.constant(np.random.default_rng(0).integers(1, 40, (1, 50)), tf.int32)
  net(ids)
  for block in net.blocks:
    block.alpha.assign(1.0)  # ReZero starts every block at the identity
  for k in range(1, 4):
    mask = tf.constant([[1.0] * k + [0.0] * (6 - k)])
    first_k = NextItNet(40, channels=8, num_blocks=k, kernel_size=3, dilations=dilations)
    for distance in range(0, 30):
      changed = ids.numpy().copy()
      changed[0, -1 - distance] = changed[0, -1 - distance] % 39 + 1
      delta = tf.reduce_max(tf.abs(net(tf.constant(changed), block_mask=mask)[0, -1]
                                   - net(ids, block_mask=mask)[0, -1]))
      sees = first_k.blocks_to_reach(distance) is not None
      assert bool(delta > 1e-6) == sees, (k, distance)


def test_the_table_shows_each_groups_minimum():
  net = NextItNet(50, channels=8, num_blocks=32, kernel_size=3, dilations=(1, 2))
  minimum = min_blocks_by_kind(["lag02", "lag08", "lag24", "lag48"], net)
  assert minimum == {"lag02": 1, "lag08": 2, "lag24": 3, "lag48": 5}
  assert min_blocks_by_kind(["shallow", "deep"], net) == {}
  metrics = {c: 0.5 for c in report.COLUMNS}
  table = report.metrics_table({"test": {**metrics, "blocks": 6.0},
                                "test/lag48": {**metrics, "blocks": 9.5, "min": 5}})
  lines = table.splitlines()
  assert lines[0].split()[-2:] == ["blocks", "min"]
  assert lines[-1].split()[-2:] == ["9.50", "5"]
  assert lines[-2].split()[-1] == "-" and lines[-2].split()[-2] == "6.00"


def _separation_config(num_blocks: int):
  from tf_skiprec.experiments.default import graded_backbone
  config = graded_backbone()   # make train's data and backbone, smaller
  config.data.synthetic.num_users = 800
  config.data.synthetic.num_items = 100     # fewer echoes to learn: a test-sized run
  config.data.synthetic.min_length, config.data.synthetic.max_length = 50, 90
  config.data.max_len = 48
  config.model.num_blocks = num_blocks
  config.model.block_drop = 0.0
  config.train.learning_rate = 5e-3
  config.train.epochs = 16
  config.train.patience = 16
  config.runtime.progress = False
  return config


@pytest.mark.slow
def test_graded_separation_full_depth_beats_the_shallowest_groups_depth_on_deep_groups(tmp_path):
  # The shallowest group (lag 2) needs 1 block: a 1-block backbone matches the full one there and
  # loses on the deeper groups. Measured (valid+test mean, 1 block vs 8, the head's LayerNorm
  # on): lag02 0.866 vs 0.853, lag08 0.121 vs 0.699, lag20 0.159 vs 0.344, lag32 0.234 vs
  # 0.255: in a test-sized run (16 epochs, 800 users) the 4-block chain lag32 needs is not
  # learned yet; make train's 32-block backbone learns it (BUILD_NOTES, issue 14).
  from tf_skiprec.training import run
  shallow = run(_separation_config(1), str(tmp_path / "shallow"))
  full = run(_separation_config(8), str(tmp_path / "full"))

  def ndcg(result, group):
    return np.mean([result[f"{s}_by_kind"][group]["NDCG@10"] for s in ("valid", "test")])

  print({g: (round(ndcg(shallow, g), 3), round(ndcg(full, g), 3)) for g in ("lag02", "lag08",
                                                                          "lag20", "lag32")})
  assert abs(ndcg(full, "lag02") - ndcg(shallow, "lag02")) < 0.04
  assert ndcg(full, "lag08") - ndcg(shallow, "lag08") > 0.3
  assert ndcg(full, "lag20") - ndcg(shallow, "lag20") > 0.08
  assert full["min_blocks_by_kind"] == {"lag02": 1, "lag08": 2, "lag20": 3, "lag32": 4}


@pytest.mark.parametrize("lags", ["8,8", "0,8"])
def test_bad_group_lags_are_refused_by_the_config_with_the_fix(lags):
  from tf_skiprec.errors import ConfigError
  from tf_skiprec.experiments import get_config
  config = get_config("default").override(f"data.synthetic.group_lags={lags}")
  with pytest.raises(ConfigError, match=r"data.synthetic.group_lags .*distinct.*Fix: --override "
                                        r"data.synthetic.group_lags=2,8,24,48"):
    config.validate()
