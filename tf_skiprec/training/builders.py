"""Builds what a run needs from its config: model, optimisers, pretrained weights, schedules.

The strategy is tf_skiprec/training/cluster.py's."""

from __future__ import annotations

import logging
import os

import tensorflow as tf
import tf_keras as keras

from tf_skiprec.backbone import NextItNet
from tf_skiprec.config import Config, TrainConfig
from tf_skiprec.errors import ConfigError
from tf_skiprec.model import COSTS, MODES, NextItNetModel, SkipRecModel
from tf_skiprec.policy import PolicyNetwork


def make_optimizer(learning_rate: float, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
  """Adam, or AdamW (decoupled weight decay, not on norms, biases or ReZero alphas)."""
  if weight_decay:
    opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    opt.exclude_from_weight_decay(var_names=["norm", "bias", "alpha"])
    return opt
  return keras.optimizers.Adam(learning_rate=learning_rate)


def build_model(config: Config, vocab_size: int) -> NextItNetModel:
  """The plain backbone model for "pretrain", SkipRec (backbone + policy) otherwise.

  Call under the strategy's scope. Every variable is created before returning.
  """
  mode = config.train.mode
  if mode not in MODES:
    raise ConfigError(f"train.mode={mode!r}: unknown. Fix: use one of {MODES}.")
  m, p = config.model, config.policy
  if p.cost not in COSTS:
    raise ConfigError(f"policy.cost={p.cost!r}: unknown. Fix: use one of {COSTS}.")
  backbone = NextItNet(vocab_size, channels=m.channels, num_blocks=m.num_blocks,
                       kernel_size=m.kernel_size, dilations=m.dilations, dropout=m.dropout,
                       embedding_dropout=m.embedding_dropout, tie_embeddings=m.tie_embeddings,
                       name="backbone")
  common = dict(loss=config.train.loss, num_sampled=config.train.num_sampled,
                block_drop=m.block_drop)
  if mode == "pretrain":
    model = NextItNetModel(backbone, **common)
  else:
    policy = PolicyNetwork(vocab_size, m.channels, m.num_blocks, body=p.body,
                           initial_keep_prob=p.initial_keep_prob, batch_norm=p.batch_norm,
                           name="policy")
    model = SkipRecModel(backbone, policy, mode=mode, budget=p.budget, cost=p.cost,
                         penalty=p.penalty, entropy_weight=p.entropy_weight,
                         reward=p.reward, reward_top_k=p.reward_top_k, gamma=p.gamma,
                         threshold=p.threshold, temperature=p.tau_start, **common)
  dummy = tf.zeros([1, config.data.max_len], tf.int32)
  model.score(dummy, block_mask=tf.ones([1, m.num_blocks]))  # builds the backbone and its head
  if mode != "pretrain":
    model.policy(dummy)
  return model


def make_optimizers(model: NextItNetModel, train: TrainConfig, policy_lr: float) -> dict:
  """One optimiser per variable group ("backbone", and "policy" for SkipRec), built."""
  optimizers = {}
  for name, variables in model.variable_groups().items():
    lr = train.learning_rate if name == "backbone" else policy_lr
    wd = train.weight_decay if name == "backbone" else 0.0
    optimizers[name] = make_optimizer(lr, wd)
    optimizers[name].build(variables)
  return optimizers


def load_pretrained_backbone(model: NextItNetModel, workdir: str) -> str:
  """Loads the backbone of a pretrain run's best checkpoint; copies its item embedding into the
  policy's. Returns the checkpoint path."""
  path = tf.train.latest_checkpoint(os.path.join(workdir, "best"))
  if path is None:
    raise ConfigError(f"train.init_from={workdir!r}: no best checkpoint in {workdir}/best. "
                      "Fix: point at the work directory of a finished pretrain run.")
  # The pretrain checkpoint's object graph is model -> backbone; restore only that branch.
  tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone)).restore(
      path).expect_partial().assert_existing_objects_matched()
  if isinstance(model, SkipRecModel):
    model.policy.embedding.embeddings.assign(model.backbone.embedding.embeddings)
  logging.info("Initialised the backbone from %s.", path)
  return path


def budget(step: int, policy) -> float:
  """The usage target at `step`: from 1 down to policy.budget over policy.budget_anneal_steps."""
  if policy.budget_anneal_steps <= 0:
    return policy.budget
  frac = min(step / policy.budget_anneal_steps, 1.0)
  return 1.0 + frac * (policy.budget - 1.0)


def multiplier(current: float, usage: float, target: float, policy) -> float:
  """policy.cost "lagrangian": the multiplier after one dual-ascent step, never below 0."""
  return max(0.0, current + policy.dual_lr * (usage - target))


def entropy_weight(step: int, policy) -> float:
  """The entropy term's weight at `step`: from 0 up to policy.entropy_weight over the ramp."""
  if policy.entropy_ramp_steps <= 0:
    return policy.entropy_weight
  return policy.entropy_weight * min(step / policy.entropy_ramp_steps, 1.0)


def temperature(step: int, policy) -> float:
  """The Gumbel-softmax temperature at `step` (policy.tau_* fields)."""
  frac = min(step / max(policy.tau_anneal_steps, 1), 1.0)
  if policy.tau_schedule == "constant":
    return policy.tau_start
  if policy.tau_schedule == "linear":
    return policy.tau_start + frac * (policy.tau_end - policy.tau_start)
  if policy.tau_schedule == "exponential":
    return policy.tau_start * (policy.tau_end / policy.tau_start) ** frac
  raise ConfigError(f"policy.tau_schedule={policy.tau_schedule!r}: unknown. "
                    "Fix: use 'exponential', 'linear' or 'constant'.")
