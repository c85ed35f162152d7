"""Model selection (tf_skiprec/training/selection.py): hand-made epoch histories through the
trainer's best-so-far rule, with the scores worked out in closed form; then a real run, whose
best epoch and reported rule must be what that rule gives on the epochs it saw."""

import pytest

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.config import Config
from tf_skiprec.experiments import get_config
from tf_skiprec.training import run
from tf_skiprec.training import trainer as trainer_lib
from tf_skiprec.training.report import result_table
from tf_skiprec.training.selection import (NO_SCORE, best_epoch, selection_rule,
                                           selection_score)

WITHIN = "best NDCG@10 within budget 0.10 + slack 0.05"
NONE_WITHIN = "none within budget 0.10 + slack 0.05: NDCG@10 x (1 - 0.5 x usage)"


def _config(mode: str = "gumbel", budget: float = 0.1, slack: float = 0.05,
            selection_lambda: float = 0.5) -> Config:
  config = Config()
  config.train.mode = mode
  config.policy.budget_counts_policy = False  # the rule on the blocks' usage; the share: below
  config.policy.budget, config.policy.budget_slack = budget, slack
  config.policy.selection_lambda = selection_lambda
  return config


def _valid(ndcg: float, usage: float) -> dict:
  """An epoch's validation result, as the evaluator returns it (the fields selection reads)."""
  return {"metrics": {"NDCG@10": ndcg, "HR@10": 2 * ndcg}, "blocks": {"usage": usage}}


def _epochs(*pairs: tuple[float, float]) -> list[dict]:
  return [_valid(ndcg, usage) for ndcg, usage in pairs]


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_none_within_budget_the_more_accurate_wins_at_a_small_usage_cost(mode):
  """The issue's run: 0.556 at usage 0.19 was chosen over 0.654 at 0.225 (budget 0.1 + 0.05)."""
  config = _config(mode)
  history = _epochs((0.556, 0.19), (0.654, 0.225))
  # 0.556 x (1 - 0.5 x 0.19) = 0.503180 < 0.654 x (1 - 0.5 x 0.225) = 0.580425
  assert selection_score(history[0], config) == pytest.approx(0.503180)
  assert selection_score(history[1], config) == pytest.approx(0.580425)
  assert best_epoch(history, config) == 1
  assert best_epoch(history[::-1], config) == 0                     # whatever the order
  assert selection_rule(history[1], config) == NONE_WITHIN


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_within_budget_a_falling_ndcg_does_not_replace_the_best(mode):
  """ML-100k: epochs kept being marked best while validation NDCG@10 fell 0.0755 -> 0.0728."""
  config = _config(mode, budget=0.4)
  history = _epochs((0.0700, 0.6), (0.0755, 0.44), (0.0748, 0.40), (0.0741, 0.36),
                    (0.0728, 0.30))
  assert best_epoch(history, config) == 1
  assert selection_rule(history[1], config) == "best NDCG@10 within budget 0.40 + slack 0.05"


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_every_within_budget_epoch_ranks_above_every_over_budget_one(mode):
  config = _config(mode)
  poor_within, best_over = _valid(0.0, 0.15), _valid(1.0, 0.151)     # 0.15 = budget + slack
  assert selection_score(poor_within, config) == 2.0                 # 2 + NDCG@10
  assert selection_score(best_over, config) == pytest.approx(1.0 - 0.5 * 0.151)
  assert best_epoch([best_over, poor_within], config) == 1
  assert best_epoch([poor_within, best_over], config) == 0
  assert selection_rule(poor_within, config) == WITHIN
  assert selection_rule(best_over, config) == NONE_WITHIN
  # Even with no trade-off (lambda 0), an over-budget NDCG@10 of 1 stays below.
  free = _config(mode, selection_lambda=0.0)
  assert selection_score(_valid(1.0, 0.9), free) == 1.0 < selection_score(poor_within, free)
  assert best_epoch([_valid(1.0, 0.9), poor_within], free) == 1


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_none_within_budget_a_tiny_gain_does_not_pay_for_much_more_compute(mode):
  config = _config(mode)
  cheap, costly = _valid(0.600, 0.3), _valid(0.610, 0.9)
  # 0.600 x (1 - 0.15) = 0.5100 > 0.610 x (1 - 0.45) = 0.3355
  assert selection_score(cheap, config) == pytest.approx(0.600 * 0.85)
  assert selection_score(costly, config) == pytest.approx(0.610 * 0.55)
  assert best_epoch([costly, cheap], config) == 1
  # The break-even: costly wins iff its NDCG@10 > 0.600 x 0.85 / 0.55 = 0.92727...
  assert best_epoch([cheap, _valid(0.9273, 0.9)], config) == 1
  assert best_epoch([cheap, _valid(0.9272, 0.9)], config) == 0
  # 10 points more usage, from 0.2: costly wins iff its NDCG@10 is > 0.9 / 0.85 - 1 = 5.9 % higher.
  assert best_epoch([_valid(0.600, 0.2), _valid(0.600 * 0.9 / 0.85 * 1.001, 0.3)], config) == 1
  assert best_epoch([_valid(0.600, 0.2), _valid(0.600 * 0.9 / 0.85 * 0.999, 0.3)], config) == 0


def test_over_budget_epochs_are_not_ranked_by_usage_alone():
  """The old rule (-1 - usage) kept the cheapest over-budget epoch whatever its NDCG@10."""
  config = _config()
  assert best_epoch(_epochs((0.30, 0.5), (0.01, 0.2)), config) == 0
  assert best_epoch(_epochs((0.01, 0.2), (0.30, 0.5)), config) == 1


def test_pretrain_ignores_usage():
  config = _config("pretrain")
  history = _epochs((0.50, 0.0), (0.60, 1.0), (0.55, 0.1))
  assert [selection_score(v, config) for v in history] == [0.50, 0.60, 0.55]
  assert best_epoch(history, config) == 1
  assert selection_rule(history[1], config) == "NDCG@10 (all blocks)"


def test_ties_keep_the_earlier_epoch_and_no_epoch_chooses_nothing():
  config = _config()
  assert best_epoch(_epochs((0.5, 0.1), (0.5, 0.1)), config) == 0
  assert best_epoch([], config) is None
  # Every score is far above the best score a run starts from (RunState.best_score).
  assert selection_score(_valid(0.0, 1.0), _config(selection_lambda=0.99)) > NO_SCORE


def test_the_rule_names_a_budget_that_does_not_round_to_two_decimals():
  config = _config(budget=0.125, slack=0.0, selection_lambda=0.25)
  assert selection_rule(_valid(0.1, 0.125), config) == (
      "best NDCG@10 within budget 0.125 + slack 0.00")
  assert selection_rule(_valid(0.1, 0.2), config) == (
      "none within budget 0.125 + slack 0.00: NDCG@10 x (1 - 0.25 x usage)")


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_the_budget_counts_the_policy_networks_own_cost_beside_the_blocks(mode):
  config = _config(mode, budget=0.45, slack=0.05)
  config.policy.budget_counts_policy = True
  # Config(): 8 blocks of 64 channels, kernel 3, window 50; the cnn policy is 2 blocks + its head.
  block = 4 * 3 * 64 * 64 * 50
  share = (2 * block + 2 * 64 * 2 * 8) / (8 * block)                 # 0.2503
  limit = 0.45 + 0.05 - share                                        # the blocks' usage: 0.2497
  assert selection_score(_valid(0.3, limit - 1e-3), config) == pytest.approx(2.3)   # within
  assert selection_score(_valid(0.3, limit + 1e-3), config) < 1.0                   # over
  assert selection_rule(_valid(0.3, 0.2), config) == (
      f"best NDCG@10 within budget 0.45 (blocks {0.45 - share:g} + policy {share:.3f}) + "
      "slack 0.05")
  config.policy.body = "pool"                                        # one 2C x C layer: 0.0003
  assert selection_score(_valid(0.3, 0.49), config) == pytest.approx(2.3)
  config.policy.budget_counts_policy = False                         # the blocks' usage alone
  assert selection_score(_valid(0.3, 0.5), config) == pytest.approx(2.3)
  assert selection_score(_valid(0.3, 0.5 + 1e-3), config) < 1.0


def test_the_table_says_which_rule_chose_the_best_epoch():
  result = {"valid": _row(), "test": _row(), "valid_blocks": {"mean": 4.0},
            "test_blocks": {"mean": 4.0}, "best_epoch": 7, "selection_rule": WITHIN}
  assert f"best epoch 7 chosen by: {WITHIN}" in result_table(result).splitlines()


def _row() -> dict:
  return {f"{m}@{k}": 0.5 for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}


def test_a_run_keeps_the_epoch_the_rule_picks_and_reports_its_rule(tmp_path, monkeypatch):
  """A tiny Gumbel run: the best epoch of metrics.json and its rule are best_epoch and
  selection_rule of the validation results the trainer saw, and the final validation
  evaluation of the best model reproduces that epoch's."""
  seen = []

  def recorded(valid, config):
    seen.append(valid)
    return selection_score(valid, config)

  monkeypatch.setattr(trainer_lib, "selection_score", recorded)
  config = get_config("smoke")
  config.train.mode, config.train.pretrain_epochs, config.train.epochs = "gumbel", 1, 4
  config.train.patience = 4
  config.policy.budget, config.policy.budget_anneal_steps = budget_for_usage(config, 0.3), 20
  result = run(config, str(tmp_path))
  skiprec = seen[1:]                                                 # seen[0]: the pretrain stage
  assert len(skiprec) == 4
  best = best_epoch(skiprec, config)
  assert result["best_epoch"] == best + 1
  assert result["valid"] == skiprec[best]["metrics"]
  assert result["valid_blocks"]["usage"] == skiprec[best]["blocks"]["usage"]
  assert result["selection_rule"] == selection_rule(skiprec[best], config)
  # the blocks at 0.3 + the cnn policy's 0.501 on 4 blocks
  budget = "budget 0.801042 (blocks 0.30 + policy 0.501) + slack 0.05"
  assert result["selection_rule"].startswith((f"best NDCG@10 within {budget}",
                                              f"none within {budget}: "))
