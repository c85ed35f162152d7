"""Model selection: the score early stopping maximises, from an epoch's validation result.

Validation only (the test split is never looked at). An epoch is the new best iff its score is
above the best so far (`improves`), starting from NO_SCORE; `best_epoch` replays that rule over a
list of epochs.

  "pretrain": validation NDCG@10 (every block runs).
  "gumbel", "rl": an epoch is within budget if its validation compute is <= policy.budget +
    policy.budget_slack: its usage (mean executed blocks / N) + the policy network's own share of
    the full backbone's compute (compute.budget_share), i.e. usage <= compute.block_budget +
    slack.
    - Within budget, the best validation NDCG@10 wins: score 2 + NDCG@10, in [2, 3].
    - Every within-budget epoch ranks above every over-budget one. Over budget (used only when no
      epoch so far is within it), accuracy is traded against compute, relative to the NDCG@10
      scale: score NDCG@10 * (1 - lambda * usage), in [0, 1], lambda = policy.selection_lambda
      (in [0, 1)). Of two over-budget epochs, the one with 10 points more usage wins iff its
      NDCG@10 is higher by more than a factor (1 - lambda u) / (1 - lambda (u + 0.1)): with
      lambda = 0.5, about 5-10 % relative NDCG@10 (5.3 % from usage 0, 10 % from 0.9).
"""

from __future__ import annotations

from tf_skiprec.compute import block_budget, budget_share
from tf_skiprec.config import Config

SELECT_METRIC = "NDCG@10"
NO_SCORE = -1e9          # RunState.best_score before the first epoch: below every score
WITHIN_BUDGET = 2.0      # within-budget scores are WITHIN_BUDGET + NDCG@10: above any over-budget


def within_budget(valid: dict, config: Config) -> bool:
  """Whether an evaluation result's validation usage + the policy's share is <= policy.budget +
  policy.budget_slack (compared as usage <= the blocks' budget + slack)."""
  return valid["blocks"]["usage"] <= block_budget(config) + config.policy.budget_slack


def selection_score(valid: dict, config: Config) -> float:
  """valid: an evaluation result ({"metrics": {"NDCG@10": ..}, "blocks": {"usage": ..}}) -> its
  score (the module docstring gives the rule)."""
  ndcg = valid["metrics"][SELECT_METRIC]
  if config.train.mode == "pretrain":
    return ndcg
  if within_budget(valid, config):
    return WITHIN_BUDGET + ndcg
  return ndcg * (1.0 - config.policy.selection_lambda * valid["blocks"]["usage"])


def selection_rule(valid: dict, config: Config) -> str:
  """The rule that ranks an evaluation result, in words, e.g. "best NDCG@10 within budget 0.10 +
  slack 0.05" (for the best epoch: the rule that chose it)."""
  if config.train.mode == "pretrain":
    return f"{SELECT_METRIC} (all blocks)"
  policy = config.policy
  share = budget_share(config)
  parts = f" (blocks {_number(block_budget(config))} + policy {share:.3f})" if share else ""
  budget = f"budget {_number(policy.budget)}{parts} + slack {_number(policy.budget_slack)}"
  if within_budget(valid, config):
    return f"best {SELECT_METRIC} within {budget}"
  return (f"none within {budget}: {SELECT_METRIC} x (1 - {policy.selection_lambda:g} x usage)")


def improves(score: float, best: float) -> bool:
  """Whether an epoch's score makes it the new best (the trainer's test; ties keep the earlier)."""
  return score > best


def best_epoch(history: list[dict], config: Config) -> int | None:
  """The epoch (0-based) the trainer keeps from `history`, its epochs' evaluation results in
  order; None if the list is empty."""
  best, chosen = NO_SCORE, None
  for index, valid in enumerate(history):
    score = selection_score(valid, config)
    if improves(score, best):
      best, chosen = score, index
  return chosen


def _number(x: float) -> str:
  """0.1 -> "0.10", 0.125 -> "0.125": two decimals, more when they would round."""
  return f"{x:.2f}" if round(x, 2) == x else f"{x:g}"
