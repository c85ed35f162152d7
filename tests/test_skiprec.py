import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import histories, set_alphas, tiny_skiprec
from tf_skiprec.compute import block_budget, budget_for_usage
from tf_skiprec.experiments import get_config
from tf_skiprec.experiments.ml100k import skiprec_finetune
from tf_skiprec.errors import ConfigError
from tf_skiprec.model import log_blocks_charge
from tf_skiprec.policy import sampled_decisions
from tf_skiprec.training import builders, run
from tf_skiprec.training.steps import make_train_loop


def _config(mode="gumbel", **policy):
  """smoke in `mode`; a `budget` is the blocks' usage target (the policy's share is added)."""
  config = get_config("smoke")
  config.train.mode = mode
  for k, v in policy.items():
    setattr(config.policy, k, v)
  if "budget" in policy:
    config.policy.budget = budget_for_usage(config, policy["budget"])
  return config


def _batch(seed=0):
  seq = tf.constant(np.random.default_rng(seed).integers(1, 60, size=(8, 21)), tf.int32)
  return {"inputs": seq[:, :-1], "labels": seq[:, 1:]}


def test_compute_penalty_drives_usage_down():
  config = _config(budget=0.1, penalty=20.0, tau_start=1.0, tau_schedule="constant",
                   learning_rate=1e-2)
  model = builders.build_model(config, vocab_size=61)
  opt = builders.make_optimizers(model, config.train, config.policy.learning_rate)
  batch = _batch()

  def usage():
    return float(tf.reduce_mean(model.decisions(batch["inputs"], 0.5)))

  assert usage() == 1.0  # initial P(keep) = 0.9 >= 0.5
  for _ in range(60):
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True)
    groups = model.variable_groups()
    grads = tape.gradient(loss, groups["policy"])
    opt["policy"].apply_gradients(zip(grads, groups["policy"]))
  assert usage() <= 0.4, usage()  # pushed from 1 toward the budget of 0.1


def test_lagrangian_cost_raises_its_multiplier_until_usage_meets_the_budget():
  config = _config(budget=0.1, cost="lagrangian", dual_lr=2.0, tau_start=1.0,
                   tau_schedule="constant", learning_rate=1e-2)
  model = builders.build_model(config, vocab_size=61)
  opt = builders.make_optimizers(model, config.train, config.policy.learning_rate)
  batch = _batch()
  multipliers, usages = [], []
  for _ in range(60):
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True)
    groups = model.variable_groups()
    opt["policy"].apply_gradients(zip(tape.gradient(loss, groups["policy"]), groups["policy"]))
    model.after_step(stats, step=0)                   # dual ascent against the budget, 0.1
    multipliers.append(float(model.multiplier.numpy()))
    usages.append(float(stats["usage"]))
  assert multipliers[0] == pytest.approx(2.0 * (usages[0] - 0.1))  # one step from 0
  assert max(multipliers) > 1.0  # usage above the budget raised it ...
  usage = float(tf.reduce_mean(model.decisions(batch["inputs"], 0.5)))
  assert usage <= 0.25, usage     # ... until the decisions came down to the budget


def test_user_charge_is_log_of_blocks_plus_one_and_prices_a_users_first_blocks_most():
  keep = tf.constant([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], tf.float32)
  np.testing.assert_allclose(log_blocks_charge(keep).numpy(), np.log([2.0, 4.0, 1.0]), rtol=1e-6)
  with tf.GradientTape() as tape:
    tape.watch(keep)
    charge = tf.reduce_sum(log_blocks_charge(keep))
  # d/d keep_ui = 1 / (k_u + 1): a user running 1 block pays 1/2 per block, one running 3 pays
  # 1/4, one running none 1.
  np.testing.assert_allclose(tape.gradient(charge, keep).numpy()[:, 0], [0.5, 0.25, 1.0],
                             rtol=1e-6)
  # At the same mean usage (2 of 4 blocks), unequal users are charged less than equal ones.
  equal = tf.reduce_mean(log_blocks_charge(tf.constant([[1, 1, 0, 0], [1, 1, 0, 0]], tf.float32)))
  unequal = tf.reduce_mean(log_blocks_charge(tf.constant([[1, 0, 0, 0], [1, 1, 1, 0]],
                                                         tf.float32)))
  assert float(unequal) < float(equal)


def test_user_charge_enters_the_gumbel_loss_with_its_weight():
  batch = _batch()
  losses = {}
  for weight in (0.0, 0.7):
    config = _config(user_charge=weight)
    tf.keras.utils.set_random_seed(0)
    model = builders.build_model(config, vocab_size=61)
    losses[weight] = model.compute_loss_and_stats(batch, training=True, seed=[1, 2], step=0)
  (loss0, _), (loss1, stats) = losses[0.0], losses[0.7]
  assert "user_charge" not in losses[0.0][1]
  assert float(loss1 - loss0) == pytest.approx(0.7 * float(stats["user_charge"]), rel=1e-4)
  assert float(stats["user_charge"]) > 0.0


def test_entropy_term_makes_the_policy_decide():
  # P(keep) = 0.6 everywhere: the entropy term alone (no compute term) pushes it away from 0.5.
  config = _config(initial_keep_prob=0.6, entropy_weight=1.0, cost="lagrangian",
                   learning_rate=1e-2)
  model = builders.build_model(config, vocab_size=61)
  opt = builders.make_optimizers(model, config.train, config.policy.learning_rate)
  batch = _batch()
  prob = lambda: tf.nn.softmax(model.policy(batch["inputs"]), axis=-1)[..., 1]  # noqa: E731
  start = float(tf.reduce_mean(tf.abs(prob() - 0.5)))
  for _ in range(30):
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True)
    groups = model.variable_groups()
    opt["policy"].apply_gradients(zip(tape.gradient(loss, groups["policy"]), groups["policy"]))
  assert "entropy" in stats
  assert float(tf.reduce_mean(tf.abs(prob() - 0.5))) > start + 0.1


@pytest.mark.parametrize("reward", ["likelihood", "quadratic"])
def test_rl_loss_trains_the_policy_with_finite_gradients(reward):
  # quadratic, reward_top_k = every item: each target is a hit, so R = 1 - usage^2. likelihood:
  # the blocks are the identity (alphas 0), so R = mean log-likelihood - 0.5 * usage with the
  # same log-likelihood for any decisions. Either way the advantage is non-zero wherever a
  # sampled decision differs from the greedy one (P(keep) = 0.6 here).
  config = _config(mode="rl", reward=reward, reward_top_k=1000, initial_keep_prob=0.6)
  model = builders.build_model(config, vocab_size=61)
  with tf.GradientTape() as tape:
    loss, stats = model.compute_loss_and_stats(_batch(), training=True)
  assert set(stats) == {"rec_loss", "reward", "advantage", "usage"}
  # Greedy keeps every block (usage 1); a sample keeps fewer (a higher R): advantage > 0.
  assert float(stats["advantage"]) > 0
  groups = model.variable_groups()
  grads = tape.gradient(loss, groups["policy"] + groups["backbone"])
  assert all(g is None or bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
  head = [g for v, g in zip(groups["policy"], grads) if "head" in v.name]
  assert all(float(tf.norm(g)) > 0 for g in head)


def test_rl_leaves_the_backbone_loss_unchanged_and_the_greedy_pass_trains_nothing():
  config = _config(mode="rl", initial_keep_prob=0.6)
  model = builders.build_model(config, vocab_size=61)
  set_alphas(model.backbone, 0.5)  # decisions change the scores, so the rewards differ
  batch, seed = _batch(), tf.constant([3, 4])
  with tf.GradientTape(persistent=True) as tape:
    loss, stats = model.compute_loss_and_stats(batch, training=True, seed=seed)
    policy_term = loss - stats["rec_loss"]
  zero = lambda g: g is None or not np.any(tf.convert_to_tensor(g).numpy())  # noqa: E731
  assert all(zero(g) for g in tape.gradient(policy_term, model.variable_groups()["backbone"]))
  assert not all(zero(g) for g in tape.gradient(policy_term, model.variable_groups()["policy"]))
  # The backbone's loss: the recommendation loss under the sampled decisions (the same seed).
  keep, _ = sampled_decisions(model.policy(batch["inputs"], training=True), seed)
  assert 0 < float(tf.reduce_mean(keep)) < 1
  hidden = model.backbone(batch["inputs"], block_mask=keep, training=True)
  assert float(stats["rec_loss"]) == float(model.position_loss(hidden, batch, training=True))


def test_rl_compute_cost_ramp_charges_nothing_at_step_0_and_all_after_the_ramp():
  batch, seed = _batch(), tf.constant([3, 4])

  def reward(step, **policy):
    tf.keras.utils.set_random_seed(0)
    model = builders.build_model(_config(mode="rl", initial_keep_prob=0.6, **policy), 61)
    _, stats = model.compute_loss_and_stats(batch, training=True, seed=seed, step=step)
    return float(stats["reward"]), float(stats["usage"])

  free, usage = reward(0, compute_cost=0.0)
  assert usage > 0
  assert reward(0, compute_cost=2.0, compute_cost_ramp_steps=100)[0] == pytest.approx(free)
  assert reward(50, compute_cost=2.0, compute_cost_ramp_steps=100)[0] == pytest.approx(
      free - 1.0 * usage, rel=1e-5)
  assert reward(100, compute_cost=2.0, compute_cost_ramp_steps=100)[0] == pytest.approx(
      free - 2.0 * usage, rel=1e-5)


def test_rl_rewards_compare_the_decisions_with_dropout_off():
  # P(keep) ~ 1 - 1e-7: every sample equals the greedy decisions. With dropout in the sampled
  # pass's reward only, its noise alone would make the advantages non-zero.
  config = _config(mode="rl", initial_keep_prob=1 - 1e-7)
  config.model.dropout = 0.5
  model = builders.build_model(config, vocab_size=61)
  set_alphas(model.backbone, 0.5)
  loss, stats = model.compute_loss_and_stats(_batch(), training=True, seed=tf.constant([1, 2]))
  assert float(stats["usage"]) == 1.0
  assert float(stats["advantage"]) == 0.0
  assert float(loss) == float(stats["rec_loss"])


def _rl_steps(compute_cost: float, steps: int = 30):
  """A smoke SkipRec whose blocks are the identity (alphas 0: skipping changes no score), trained
  by REINFORCE on one batch for `steps` steps through the traced loop, the policy alone
  (lr 3e-2). Returns (mean P(keep), greedy usage) before and after."""
  config = _config(mode="rl", compute_cost=compute_cost, learning_rate=3e-2)
  model = builders.build_model(config, vocab_size=61)
  assert all(float(block.alpha) == 0.0 for block in model.backbone.blocks)
  optimizer = builders.make_optimizers(model, config.train, config.policy.learning_rate)["policy"]
  loop = make_train_loop(model, {"policy": optimizer}, tf.distribute.get_strategy(),
                         tf.Variable(0, dtype=tf.int64), seed=0)
  batch = _batch()

  def keep_and_usage():
    prob = tf.nn.softmax(model.policy(batch["inputs"], training=False), axis=-1)[..., 1]
    return float(tf.reduce_mean(prob)), float(tf.reduce_mean(model.decisions(batch["inputs"])))

  before = keep_and_usage()
  loop(iter(tf.data.Dataset.from_tensors(batch).repeat()), tf.constant(steps, tf.int64))
  return before, keep_and_usage()


@pytest.mark.parametrize("compute_cost", [0.5, 0.0])
def test_rl_skips_blocks_that_cost_compute_and_add_no_accuracy(compute_cost):
  (keep0, usage0), (keep1, usage1) = _rl_steps(compute_cost)
  assert keep0 == pytest.approx(0.9, abs=0.01) and usage0 == 1.0  # initial_keep_prob
  if compute_cost > 0:  # measured: P(keep) 0.90 -> 0.55, greedy usage 1 -> 0.59
    assert keep1 < keep0 - 0.2 and usage1 <= 0.8, (keep1, usage1)
  else:  # the control: no charge, identical likelihoods, every advantage 0
    assert keep1 > keep0 - 0.2 and usage1 == 1.0, (keep1, usage1)


def test_evaluation_decisions_are_deterministic_and_differ_between_users():
  # A policy with mixed decisions (tests/conftest.py): some users keep a block that others skip,
  # so all-zero or all-one decisions, or decisions drawn at random, would fail.
  model, _ = tiny_skiprec(num_items=40, num_blocks=6, max_len=12)
  history = tf.constant(histories(40, 16, 12, seed=3))
  first = model.decisions(history, 0.5).numpy()                          # [16, 6]
  assert 0 < first.sum() < first.size                                    # neither none nor all
  assert len({tuple(row) for row in first}) > 1                          # not the same for all
  for _ in range(3):
    np.testing.assert_array_equal(model.decisions(history, 0.5).numpy(), first)
  prob = tf.nn.softmax(model.policy(history, training=False), axis=-1)[..., 1].numpy()
  np.testing.assert_array_equal(first, (prob >= 0.5).astype(np.float32))  # the rule itself
  mask = tf.constant(first)
  s1, s2 = model.score(history, block_mask=mask).numpy(), model.score(history, block_mask=mask).numpy()
  np.testing.assert_array_equal(s1, s2)
  assert not np.array_equal(s1, model.score(history).numpy())            # decisions matter


def test_skiprec_initialises_from_a_pretrained_backbone(tmp_path):
  pre = get_config("smoke")
  pre_result = run(pre, str(tmp_path / "pre"))
  config = _config()
  config.train.init_from = str(tmp_path / "pre")
  model = builders.build_model(config, vocab_size=pre_result["num_items"] + 1)
  before = model.backbone.embedding.embeddings.numpy().copy()
  builders.load_pretrained_backbone(model, str(tmp_path / "pre"))
  saved = tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / "pre" / "best")),
                                 "model/backbone/embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE")
  np.testing.assert_array_equal(model.backbone.embedding.embeddings.numpy(), saved)
  assert not np.array_equal(before, model.backbone.embedding.embeddings.numpy())
  np.testing.assert_array_equal(model.policy.embedding.embeddings.numpy(),
                                model.backbone.embedding.embeddings.numpy())
  alphas = [float(b.alpha) for b in model.backbone.blocks]
  assert any(a != 0.0 for a in alphas)  # trained ReZero alphas came across
  # With every block kept, SkipRec from the pretrained backbone scores exactly like it.
  result = run(config, str(tmp_path / "skip"))
  assert result["init_from"] == str(tmp_path / "pre")
  sweep_full = next(p for p in result["threshold_sweep"] if p["threshold"] == 0.0)
  assert sweep_full["mean_blocks"] == 4.0
  # The compute cap at threshold 0: every user runs exactly m blocks, m = 1..N; m = N is every
  # block, so it scores what threshold 0 scores.
  caps = result["max_blocks_sweep"]
  assert [p["max_blocks"] for p in caps] == [1, 2, 3, 4]
  assert [p["mean_blocks"] for p in caps] == [1.0, 2.0, 3.0, 4.0]
  assert caps[-1]["NDCG@10"] == sweep_full["NDCG@10"]


def test_the_max_blocks_sweep_spans_1_to_n_on_a_log_grid():
  from tf_skiprec.training.end_of_run import sweep_caps
  assert sweep_caps(4) == [1, 2, 3, 4] and sweep_caps(10) == list(range(1, 11))
  caps = sweep_caps(32)
  assert caps[0] == 1 and caps[-1] == 32 and len(caps) <= 10 and caps == sorted(set(caps))
  assert sweep_caps(128)[:3] == [1, 2, 3] and sweep_caps(128)[-1] == 128


def test_init_from_without_a_checkpoint_is_a_clear_error(tmp_path):
  config = _config()
  config.train.init_from = str(tmp_path / "nothing")
  model = builders.build_model(config, vocab_size=61)
  with pytest.raises(Exception, match="no best checkpoint"):
    builders.load_pretrained_backbone(model, config.train.init_from)


def test_frozen_backbone_epochs_train_the_policy_alone(tmp_path):
  pre = get_config("smoke")
  pre.train.epochs = 1
  run(pre, str(tmp_path / "pre"))
  config = _config(freeze_backbone_epochs=1, budget=0.1, learning_rate=1e-2)
  config.train.epochs = 1
  config.train.init_from = str(tmp_path / "pre")
  run(config, str(tmp_path / "skip"))
  best = lambda d: tf.train.latest_checkpoint(str(tmp_path / d / "best"))  # noqa: E731
  key = "model/backbone/embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE"
  np.testing.assert_array_equal(tf.train.load_variable(best("skip"), key),
                                tf.train.load_variable(best("pre"), key))
  head = "model/policy/head/kernel/.ATTRIBUTES/VARIABLE_VALUE"
  assert np.abs(tf.train.load_variable(best("skip"), head)).max() > 0.06  # init stddev 0.02: moved


def test_rl_warmup_epochs_train_with_gumbel_first_then_reinforce(tmp_path):
  # default_rl's hybrid (SkipNet's): Gumbel epochs, then REINFORCE. Each epoch's logged stats
  # say which loss trained it: Gumbel's temperature, or REINFORCE's reward.
  config = _config(mode="rl", warmup_epochs=1)
  config.train.epochs = 2
  run(config, str(tmp_path / "hybrid"))
  logged = {}
  for path in (tmp_path / "hybrid" / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        logged.setdefault(value.tag, []).append(event.step)
  assert len(logged["train/epoch_tau"]) == 1 and len(logged["train/epoch_reward"]) == 1
  assert logged["train/epoch_tau"][0] < logged["train/epoch_reward"][0]


def test_pretrain_stage_uses_its_own_learning_rate_and_patience(tmp_path):
  config = _config()
  config.train.epochs, config.train.pretrain_epochs = 1, 1
  config.train.pretrain_learning_rate, config.train.pretrain_patience = 5e-3, 7
  result = run(config, str(tmp_path))
  stage = json.loads((tmp_path / "pretrain" / "config.json").read_text())["train"]
  assert (stage["mode"], stage["epochs"]) == ("pretrain", 1)
  assert (stage["learning_rate"], stage["patience"]) == (5e-3, 7)
  outer = json.loads((tmp_path / "config.json").read_text())["train"]
  assert (outer["learning_rate"], outer["patience"]) == (1e-3, 5)
  assert result["pretrain"]["workdir"] == str(tmp_path / "pretrain")
  assert result["init_from"] == str(tmp_path / "pretrain")


def test_skiprec_finetune_recipe_keeps_the_pretraining_settings_for_the_pretrain_stage():
  config = skiprec_finetune(get_config("ml100k_10"), budget=0.4)
  # The blocks aim at 0.4; the budget adds the cnn policy's own cost (2 blocks' worth of 10 + its
  # head: (2 * 4·k·C²·L + 2·C·2N) / (10 · 4·k·C²·L) with k 3, C 64, L 50).
  share = (2 * 4 * 3 * 64 * 64 * 50 + 2 * 64 * 2 * 10) / (10 * 4 * 3 * 64 * 64 * 50)
  assert config.train.mode == "gumbel" and config.policy.budget == pytest.approx(0.4 + share)
  assert block_budget(config) == 0.4
  assert config.train.pretrain_learning_rate == pytest.approx(2e-3)
  assert config.train.learning_rate == pytest.approx(2e-4)
  assert (config.train.pretrain_patience, config.train.patience) == (10, 4)
  skiprec = get_config("ml100k_skiprec")
  assert skiprec.model.block_drop == 0.2 and skiprec.train.pretrain_epochs > 0
  assert skiprec.policy.body == "pool" and block_budget(skiprec) == 0.4   # the cheap policy
  rl = skiprec_finetune(get_config("ml100k_32"), budget=None, mode="rl")
  assert rl.train.mode == "rl" and rl.policy.budget_anneal_steps == 0
  with pytest.raises(ConfigError, match="already a 'gumbel' config"):
    skiprec_finetune(skiprec, budget=0.4)  # twice would divide the lr again
  with pytest.raises(ConfigError, match="gumbel takes a budget"):
    skiprec_finetune(get_config("ml100k_10"), budget=None)


def test_pretrain_stage_settings_default_to_the_run_settings(tmp_path):
  config = _config()
  config.train.epochs, config.train.pretrain_epochs = 1, 1
  config.train.learning_rate, config.train.patience = 4e-3, 3
  run(config, str(tmp_path))
  stage = json.loads((tmp_path / "pretrain" / "config.json").read_text())["train"]
  assert (stage["learning_rate"], stage["patience"]) == (4e-3, 3)
