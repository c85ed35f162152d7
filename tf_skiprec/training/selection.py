"""Model selection: the score early stopping maximises, from an epoch's validation result.

Validation NDCG@10 (the test split is never looked at). For "gumbel", epochs whose validation
usage (mean executed blocks / N) is within policy.budget + policy.budget_slack rank above all
others, and those over it rank by lower usage.
"""

from __future__ import annotations

from tf_skiprec.config import Config

SELECT_METRIC = "NDCG@10"


def selection_score(valid: dict, config: Config) -> float:
  """valid: an evaluation result ({"metrics": {...}, "blocks": {"usage": ...}}) -> the score."""
  ndcg = valid["metrics"][SELECT_METRIC]
  if config.train.mode != "gumbel":
    return ndcg
  usage = valid["blocks"]["usage"]
  return ndcg if usage <= config.policy.budget + config.policy.budget_slack else -1.0 - usage
