import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.config import get_config
from tf_skiprec.training import builders, run


def _config(mode="gumbel", **policy):
  config = get_config("smoke")
  config.train.mode = mode
  for k, v in policy.items():
    setattr(config.policy, k, v)
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
    return float(tf.reduce_mean(model.decisions(batch["inputs"])))

  assert usage() == 1.0  # initial P(keep) = 0.9 >= 0.5
  for _ in range(40):
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True)
    groups = model.variable_groups()
    grads = tape.gradient(loss, groups["policy"])
    opt["policy"].apply_gradients(zip(grads, groups["policy"]))
  assert usage() <= 0.25, usage()  # pushed toward the budget of 0.1


def test_rl_loss_trains_the_policy_with_finite_gradients():
  # reward_top_k = every item: each target is a hit, so R = 1 - usage^2 and the advantage is
  # non-zero wherever a sampled decision differs from the greedy one (P(keep) = 0.6 here).
  config = _config(mode="rl", reward_top_k=1000, initial_keep_prob=0.6)
  model = builders.build_model(config, vocab_size=61)
  with tf.GradientTape() as tape:
    loss, stats = model.compute_loss_and_stats(_batch(), training=True)
  assert set(stats) == {"rec_loss", "usage", "advantage"}
  # Greedy keeps every block (usage 1, R = 0); a sample keeps fewer (R > 0): advantage > 0.
  assert float(stats["advantage"]) > 0
  groups = model.variable_groups()
  grads = tape.gradient(loss, groups["policy"] + groups["backbone"])
  assert all(g is None or bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
  head = [g for v, g in zip(groups["policy"], grads) if "head" in v.name]
  assert all(float(tf.norm(g)) > 0 for g in head)


def test_evaluation_decisions_are_identical_across_calls():
  model = builders.build_model(_config(initial_keep_prob=0.5), vocab_size=61)
  history = _batch()["inputs"]
  first = model.decisions(history).numpy()
  for _ in range(3):
    np.testing.assert_array_equal(model.decisions(history).numpy(), first)
  s1, s2 = model.score(history).numpy(), model.score(history).numpy()
  np.testing.assert_array_equal(s1, s2)


def test_resumes_from_a_pretrained_backbone(tmp_path):
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


def test_init_from_without_a_checkpoint_is_a_clear_error(tmp_path):
  config = _config()
  config.train.init_from = str(tmp_path / "nothing")
  model = builders.build_model(config, vocab_size=61)
  with pytest.raises(Exception, match="no best checkpoint"):
    builders.load_pretrained_backbone(model, config.train.init_from)


def test_temperature_schedules():
  p = get_config("smoke").policy
  p.tau_start, p.tau_end, p.tau_anneal_steps = 4.0, 0.25, 100
  assert builders.temperature(0, p) == 4.0
  assert builders.temperature(50, p) == pytest.approx(1.0)      # geometric midpoint
  assert builders.temperature(500, p) == pytest.approx(0.25)
  p.tau_schedule = "linear"
  assert builders.temperature(50, p) == pytest.approx(2.125)


def test_budget_anneals_from_one_to_the_target():
  p = get_config("smoke").policy
  p.budget, p.budget_anneal_steps = 0.2, 100
  assert [builders.budget(s, p) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
  p.budget_anneal_steps = 0
  assert builders.budget(0, p) == 0.2


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
