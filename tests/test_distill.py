"""In-place distillation (policy.distill_weight): the full backbone trained on the labels teaches
the chosen blocks' softmax. Known answers: the KL's closed form, zero between identical paths,
the weight entering the loss exactly, and the teacher's output detached."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import set_alphas
from tf_skiprec import losses
from tf_skiprec.config_rules import problems
from tf_skiprec.experiments import get_config
from tf_skiprec.training import builders


def _config(mode="gumbel", backbone="nextitnet", **policy):
  config = get_config("smoke")
  config.train.mode = mode
  config.model.backbone = backbone
  config.model.num_blocks = 4
  for k, v in policy.items():
    setattr(config.policy, k, v)
  return config


def _batch(seed=0):
  seq = tf.constant(np.random.default_rng(seed).integers(0, 60, size=(6, 21)), tf.int32)
  return {"inputs": seq[:, :-1], "labels": seq[:, 1:]}  # some padding (0) among them


def _model(config):
  tf.keras.utils.set_random_seed(0)
  model = builders.build_model(config, vocab_size=61)
  set_alphas(model.backbone, 0.7)  # the blocks do something
  return model


def _at_counted(hidden, batch):
  """hidden [B, L, C] -> its counted positions [P, C] (a label and a history), row-major."""
  mask = (batch["inputs"] != 0) & (batch["labels"] != 0)
  return tf.boolean_mask(hidden, mask)


def test_softmax_kl_closed_form():
  p_logits = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], np.float32)
  q_logits = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)

  def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  p, q = softmax(p_logits), softmax(q_logits)
  expected = (p * np.log(p / q)).sum(axis=1)
  np.testing.assert_allclose(losses.softmax_kl(p_logits, q_logits).numpy(), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.softmax_kl(p_logits, p_logits + 5.0).numpy(), [0.0, 0.0],
                             atol=1e-6)  # a shift of every logit is the same softmax


@pytest.mark.parametrize("backbone", ["nextitnet", "sasrec"])
def test_every_block_kept_gives_no_kl_and_the_full_loss(backbone):
  model = _model(_config(backbone=backbone, distill_weight=1.0))
  batch = _batch()
  hidden = model.backbone(batch["inputs"], block_mask=tf.ones([6, 4]), training=False)
  term, stats = model._distill(_at_counted(hidden, batch), batch, training=False)
  assert float(stats["distill_kl"]) == pytest.approx(0.0, abs=1e-6)
  assert float(stats["full_rec_loss"]) == pytest.approx(
      float(model.position_loss(hidden, batch)), rel=1e-6)
  assert float(term) == pytest.approx(float(stats["full_rec_loss"]), rel=1e-6)


def test_kl_is_the_mean_over_counted_positions_without_the_padding_item():
  model = _model(_config(distill_weight=1.0))
  batch = _batch()
  keep = tf.constant([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1],
                      [0, 0, 1, 1]], tf.float32)
  hidden = model.backbone(batch["inputs"], block_mask=keep, training=False)
  _, stats = model._distill(_at_counted(hidden, batch), batch, training=False)
  full = model.backbone(batch["inputs"], training=False)
  counted = (batch["inputs"].numpy() != 0) & (batch["labels"].numpy() != 0)
  t = model.backbone.logits(full).numpy()[counted][:, 1:].astype(np.float64)
  s = model.backbone.logits(hidden).numpy()[counted][:, 1:].astype(np.float64)

  def log_softmax(z):
    top = z.max(axis=1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))

  log_p, log_q = log_softmax(t), log_softmax(s)
  expected = (np.exp(log_p) * (log_p - log_q)).sum(1).mean()
  assert expected > 1e-3  # the paths differ
  assert float(stats["distill_kl"]) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_the_weight_enters_the_loss_exactly(mode):
  batch = _batch()
  out = {}
  for weight in (0.0, 0.7):
    # P(keep) 0.3: the greedy decisions skip every block, the sampled ones most of them
    model = _model(_config(mode=mode, distill_weight=weight, initial_keep_prob=0.3))
    out[weight] = model.compute_loss_and_stats(batch, training=False, seed=[1, 2], step=0)
  (loss0, stats0), (loss1, stats1) = out[0.0], out[0.7]
  assert "distill_kl" not in stats0 and "full_rec_loss" not in stats0
  term = float(stats1["full_rec_loss"]) + float(stats1["distill_kl"])
  assert float(loss1 - loss0) == pytest.approx(0.7 * term, rel=1e-4)
  assert float(stats1["distill_kl"]) > 1e-3  # the chosen path differs from the full one


def test_the_kl_never_moves_the_full_paths_output():
  # The chosen path skips every block, so only the full path runs them: the KL reaches them only
  # if the teacher's logits are not detached, and the full path's cross-entropy always does.
  model = _model(_config(distill_weight=1.0))
  batch = _batch()
  block_vars = [v for block in model.backbone.blocks for v in block.trainable_variables]
  shared = model.backbone.embedding.embeddings
  with tf.GradientTape(persistent=True) as tape:
    hidden = model.backbone(batch["inputs"], block_mask=tf.zeros([6, 4]), training=False)
    _, stats = model._distill(_at_counted(hidden, batch), batch, training=False)
  kl_grads = tape.gradient(stats["distill_kl"], block_vars)
  assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in kl_grads)
  rec_grads = tape.gradient(stats["full_rec_loss"], block_vars)
  assert all(g is not None for g in rec_grads)
  assert max(float(tf.reduce_max(tf.abs(g))) for g in rec_grads) > 0.0
  # The parts both paths run get the KL through the chosen path.
  assert float(tf.reduce_max(tf.abs(tf.convert_to_tensor(tape.gradient(stats["distill_kl"],
                                                                       shared))))) > 0.0


def _grad_norm(loss_fn, variables):
  with tf.GradientTape() as tape:
    loss = loss_fn()
  grads = tape.gradient(loss, variables)
  return sum(0.0 if g is None else float(tf.norm(tf.convert_to_tensor(g))) for g in grads)


@pytest.mark.parametrize("mode", ["gumbel", "rl"])
def test_the_kl_reaches_the_backbone_in_both_modes_and_the_policy_in_gumbel_only(mode):
  model = _model(_config(mode=mode, distill_weight=1.0, initial_keep_prob=0.5))
  batch = _batch()

  def kl():
    return model.compute_loss_and_stats(batch, training=True, seed=[3, 4], step=0)[1]["distill_kl"]

  # The blocks (not only the head, which scores both paths) get it: the student is the path the
  # step's decisions ran, not a detached pass.
  block_vars = [v for block in model.backbone.blocks for v in block.trainable_variables]
  assert _grad_norm(kl, block_vars) > 0.0
  policy_norm = _grad_norm(kl, model.policy.trainable_variables)
  if mode == "gumbel":
    assert policy_norm > 0.0  # straight-through decisions
  else:
    assert policy_norm == 0.0  # REINFORCE's samples carry no gradient


def test_no_counted_position_gives_zero_terms_and_finite_gradients():
  model = _model(_config(distill_weight=1.0))
  seq = _batch()["inputs"]
  batch = {"inputs": seq, "labels": tf.zeros_like(seq)}  # no labels: nothing counts
  with tf.GradientTape() as tape:
    loss, stats = model.compute_loss_and_stats(batch, training=False, step=0)
  assert float(stats["distill_kl"]) == 0.0 and float(stats["full_rec_loss"]) == 0.0
  grads = tape.gradient(loss, model.backbone.trainable_variables)
  assert all(g is None or bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(g))))
             for g in grads)


def _train_three_steps(weight):
  from tf_skiprec.training.steps import make_train_loop
  config = _config(distill_weight=weight, budget=0.05, initial_keep_prob=0.01)
  model = _model(config)
  optimizers = builders.make_optimizers(model, config.train, config.policy.learning_rate)
  before = [v.numpy().copy() for v in model.backbone.blocks[3].trainable_variables]
  loop = make_train_loop(model, optimizers, tf.distribute.get_strategy(),
                         tf.Variable(0, dtype=tf.int64), seed=0)
  out = loop(iter(tf.data.Dataset.from_tensors(_batch()).repeat()), tf.constant(3))
  after = model.backbone.blocks[3].trainable_variables
  moved = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(after, before))
  return out, moved


def test_a_training_loop_reports_both_terms_and_trains_skipped_blocks():
  control, unmoved = _train_three_steps(0.0)
  assert unmoved == 0.0  # P(keep) 0.01: no sample kept the last block, so it learned nothing
  out, moved = _train_three_steps(1.0)
  assert int(out["steps"]) == 3
  assert {"full_rec_loss", "distill_kl", "rec_loss", "usage"} <= set(out["means"])
  assert "distill_kl" not in control["means"]
  assert float(out["means"]["usage"]) < 0.2  # the policy skips nearly every block ...
  assert moved > 0.0                         # ... and the full path still trains them


def test_distillation_with_the_sampled_softmax_is_refused_with_the_fix():
  config = _config(distill_weight=0.5)
  config.train.loss = "sampled"
  found = problems(config)
  assert any("policy.distill_weight = 0.5" in p and "Fix: --override" in p for p in found), found
  config.train.mode = "pretrain"  # the weight is SkipRec's: unused, so not refused
  assert problems(config) == []
  config.train.mode, config.train.loss = "gumbel", "full"
  assert problems(config) == []
  config.policy.distill_weight = -1.0
  assert any("policy.distill_weight" in p for p in problems(config))
