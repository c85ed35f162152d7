"""Evaluation over a split: streaming ranking metrics and the blocks each user executes,
overall and by kind of user."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_skiprec.data.run_data import RunData
from tf_skiprec.data.splits import Windows
from tf_skiprec.metrics import RankingMetrics
from tf_skiprec.training import cluster
from tf_skiprec.training.steps import local_concat, make_eval_step

NO_CAP = np.iinfo(np.int32).max  # max_blocks None: more blocks than any model has


class Evaluator:
  """Evaluates the trained model on a split at a keep threshold.

  In a multi-worker run it evaluates a local copy of the model (cluster.local_copy), refreshed
  from the trained one before every evaluation, on every worker at once.

  Args:
    model: the trained model.
    build_copy: () -> a new model of the same architecture (multi-worker runs only).
    data: the run's data (its pipelines and the kind of each user).
    strategy: the training strategy.
    batch_size: the evaluation batch (lowered on large catalogues, data.pipeline).
  """

  def __init__(self, model, build_copy, data: RunData, strategy: tf.distribute.Strategy,
               batch_size: int):
    self.trained = model
    self.strategy = cluster.evaluation_strategy(strategy)
    self.model = cluster.local_copy(strategy, model, build_copy)
    self.data = data
    self.batch_size = batch_size
    self._step = make_eval_step(self.model, self.strategy)

  def __call__(self, windows: Windows, threshold: float, max_blocks: int | None = None) -> dict:
    """Evaluates `windows` (data.valid or data.test) with decisions at `threshold`, at most
    `max_blocks` per user (None: no cap); see `evaluate` for the result."""
    cluster.copy_variables(self.trained, self.model)  # multi-worker: every worker, the same moment
    dataset = self.data.pipelines.evaluation(windows, self.batch_size)
    return evaluate(self._step, dataset, self.strategy, self.data.user_kinds, threshold,
                    max_blocks)


def evaluate(step, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy,
             user_kinds: np.ndarray, threshold: float = 0.5,
             max_blocks: int | None = None) -> dict:
  """Runs `step` (from make_eval_step) over every batch.

  Args:
    dataset: the evaluation dataset (tf_skiprec.data.pipeline.Pipelines.evaluation).
    user_kinds: [U] kind of each user ("" when unknown).
    threshold: keep block i iff P(keep_i) >= threshold (SkipRec).
    max_blocks: and among the user's max_blocks most probable blocks (None: no cap).

  Returns:
    {"metrics": {"NDCG@10": float, ...}, "by_kind": {kind: {...}},
     "blocks": decision_report(...), "ranks": [U] ints, "keep": [U, N] 0/1}.
  """
  overall = RankingMetrics()
  ranks = np.full(len(user_kinds), -1, dtype=np.int64)
  keep = None
  threshold = tf.constant(threshold, tf.float32)
  cap = tf.constant(NO_CAP if max_blocks is None else max_blocks, tf.int32)
  batches = strategy.experimental_distribute_dataset(dataset)
  # Traced once for any batch size (the last batch is smaller), on the dataset's element spec.
  step = step.get_concrete_function(batches.element_spec, threshold, cap)
  for batch in batches:
    out = local_concat(strategy, step(batch, threshold, cap))
    if keep is None:
      keep = np.zeros((len(user_kinds), out["keep"].shape[1]), dtype=np.int8)
    ranks[out["user"]] = out["rank"]
    keep[out["user"]] = out["keep"]
    overall.update_state(out["rank"])
  if np.any(ranks < 0):
    raise RuntimeError(f"evaluation missed {int(np.sum(ranks < 0))} users")
  by_kind = {}
  for kind in sorted(set(user_kinds.tolist()) - {""}):
    metric = RankingMetrics()
    metric.update_state(ranks[user_kinds == kind])
    by_kind[kind] = _floats(metric.result())
  return {"metrics": _floats(overall.result()), "by_kind": by_kind,
          "blocks": decision_report(keep, user_kinds), "ranks": ranks, "keep": keep}


def decision_report(keep: np.ndarray, user_kinds: np.ndarray) -> dict:
  """What the policy decided. keep: [U, N] in {0, 1}; user_kinds: [U].

  Returns mean/min/max blocks executed per user, the usage of each block [N], the number of
  distinct policies (distinct rows), and the mean blocks executed by kind of user.
  """
  executed = keep.sum(axis=1)                                          # [U]
  by_kind = {kind: float(executed[user_kinds == kind].mean())
             for kind in sorted(set(user_kinds.tolist()) - {""})}
  return {"num_blocks": int(keep.shape[1]), "mean": float(executed.mean()),
          "min": int(executed.min()), "max": int(executed.max()),
          "usage": float(executed.mean() / keep.shape[1]),
          "block_usage": keep.mean(axis=0).round(4).tolist(),
          "distinct_policies": int(len(np.unique(keep, axis=0))), "by_kind": by_kind}


def _floats(result: dict) -> dict[str, float]:
  return {name: float(value.numpy()) for name, value in result.items()}
