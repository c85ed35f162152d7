import math

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.metrics import RankingMetrics, target_ranks


def test_ranks_on_hand_made_scores():
  # Items 1..4 (column 0 is padding and must never count, even with the highest score).
  scores = tf.constant([[9.0, 0.1, 0.4, 0.3, 0.2],    # target 3: only item 2 is higher -> rank 1
                        [9.0, 0.5, 0.5, 0.5, 0.1],    # target 3: ties with 1 and 2 (lower ids) -> 2
                        [9.0, 0.1, 0.2, 0.3, 0.4]])   # target 4: highest real item -> rank 0
  ranks = target_ranks(scores, tf.constant([3, 3, 4]))
  np.testing.assert_array_equal(ranks.numpy(), [1, 2, 0])


def test_metrics_equal_closed_form():
  ranks = np.array([0, 1, 4, 5, 9, 10, 19, 20, 100])
  metric = RankingMetrics(ks=(5, 10, 20))
  metric.update_state(ranks[:4])          # streaming: two updates
  metric.update_state(ranks[4:])
  got = {k: float(v) for k, v in metric.result().items()}
  n = len(ranks)
  for k in (5, 10, 20):
    inside = ranks[ranks < k]
    assert got[f"HR@{k}"] == pytest.approx(len(inside) / n)
    assert got[f"NDCG@{k}"] == pytest.approx(sum(1 / math.log2(r + 2) for r in inside) / n)
    assert got[f"MRR@{k}"] == pytest.approx(sum(1 / (r + 1) for r in inside) / n)
  # Worked by hand for k = 5: ranks 0, 1, 4 are inside.
  assert got["HR@5"] == pytest.approx(3 / 9)
  assert got["MRR@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 9)
  assert got["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 9)


def test_reset_and_sample_weight():
  metric = RankingMetrics(ks=(1,))
  metric.update_state([0, 3], sample_weight=[1.0, 0.0])
  assert float(metric.result()["HR@1"]) == 1.0
  metric.reset_state()
  metric.update_state([3])
  assert float(metric.result()["HR@1"]) == 0.0
