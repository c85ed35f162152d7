"""Evaluation over a split: streaming ranking metrics, overall and by kind of user."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_skiprec.metrics import RankingMetrics
from tf_skiprec.training.steps import local_concat


def evaluate(step, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy,
             user_kinds: np.ndarray) -> dict:
  """Runs `step` over every batch and returns the metrics.

  Args:
    step: from make_eval_step.
    dataset: the evaluation dataset (tf_skiprec.data.pipeline.Pipelines.evaluation).
    user_kinds: [U] kind of each user ("" when unknown).

  Returns:
    {"metrics": {"NDCG@10": float, ...}, "by_kind": {kind: {...}}, "ranks": [U] int array}.
  """
  overall = RankingMetrics()
  ranks = np.full(len(user_kinds), -1, dtype=np.int64)
  for batch in strategy.experimental_distribute_dataset(dataset):
    out = local_concat(strategy, step(batch))
    ranks[out["user"]] = out["rank"]
    overall.update_state(out["rank"])
  if np.any(ranks < 0):
    raise RuntimeError(f"evaluation missed {int(np.sum(ranks < 0))} users")
  by_kind = {}
  for kind in sorted(set(user_kinds.tolist()) - {""}):
    metric = RankingMetrics()
    metric.update_state(ranks[user_kinds == kind])
    by_kind[kind] = _floats(metric.result())
  return {"metrics": _floats(overall.result()), "by_kind": by_kind, "ranks": ranks}


def _floats(result: dict) -> dict[str, float]:
  return {name: float(value.numpy()) for name, value in result.items()}
