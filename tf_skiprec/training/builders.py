"""Builds what a run needs from its (validated) config: the model, its optimisers, its schedules,
and the pretrained weights it starts from. The backbone and the policy body come from their
registries by name (tf_skiprec/backbones/, tf_skiprec/policy.py).

The strategy is tf_skiprec/training/cluster.py's."""

from __future__ import annotations

import logging
import os

import tensorflow as tf
import tf_keras as keras

from tf_skiprec import backbones
from tf_skiprec.compute import block_budget
from tf_skiprec.config import Config, TrainConfig
from tf_skiprec.errors import ConfigError
from tf_skiprec.model import BackboneModel, SkipRecModel
from tf_skiprec.policy import PolicyNetwork
from tf_skiprec.schedules import Schedules


def make_optimizer(learning_rate: float, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
  """Adam, or AdamW (decoupled weight decay, not on norms, biases or ReZero alphas)."""
  if weight_decay:
    opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    opt.exclude_from_weight_decay(var_names=["norm", "bias", "alpha"])
    return opt
  return keras.optimizers.Adam(learning_rate=learning_rate)


def make_schedules(config: Config) -> Schedules:
  """The temperature, budget, entropy-weight, dual-ascent and compute-cost schedules of
  config.policy. The blocks' usage target is the budget less the policy network's own share of
  the compute (compute.block_budget)."""
  policy = config.policy
  return Schedules(tau_start=policy.tau_start, tau_end=policy.tau_end,
                   tau_schedule=policy.tau_schedule, tau_anneal_steps=policy.tau_anneal_steps,
                   budget=block_budget(config), budget_anneal_steps=policy.budget_anneal_steps,
                   entropy_weight=policy.entropy_weight,
                   entropy_ramp_steps=policy.entropy_ramp_steps, dual_lr=policy.dual_lr,
                   compute_cost_ramp_steps=policy.compute_cost_ramp_steps)


def build_model(config: Config, vocab_size: int) -> BackboneModel:
  """The backbone alone for "pretrain", SkipRec (backbone + policy) otherwise.

  Call under the strategy's scope. Every variable is created before returning.
  """
  m, p, mode = config.model, config.policy, config.train.mode
  backbone = backbones.build(vocab_size, m, config.data.max_len)
  common = dict(loss=config.train.loss, num_sampled=config.train.num_sampled,
                block_drop=m.block_drop,
                block_drop_mode=m.block_drop_mode)
  if mode == "pretrain":
    model = BackboneModel(backbone, **common)
  else:
    policy = PolicyNetwork(vocab_size, m.channels, m.num_blocks, body=p.body,
                           dilations=p.dilations,
                           initial_keep_prob=p.initial_keep_prob, batch_norm=p.batch_norm,
                           name="policy")
    model = SkipRecModel(backbone, policy, mode=mode, schedules=make_schedules(config), cost=p.cost,
                         penalty=p.penalty, user_charge=p.user_charge,
                         distill_weight=p.distill_weight, reward=p.reward,
                         compute_cost=p.compute_cost,
                         advantage_norm=p.advantage_norm, reward_top_k=p.reward_top_k,
                         gamma=p.gamma, **common)
  dummy = tf.zeros([1, config.data.max_len], tf.int32)
  model.score(dummy, block_mask=tf.ones([1, m.num_blocks]))  # builds the backbone and its head
  if mode != "pretrain":
    model.policy(dummy)
  return model


def make_optimizers(model: BackboneModel, train: TrainConfig, policy_lr: float) -> dict:
  """One optimiser per variable group ("backbone", and "policy" for SkipRec), built."""
  optimizers = {}
  for name, variables in model.variable_groups().items():
    lr = train.learning_rate if name == "backbone" else policy_lr
    wd = train.weight_decay if name == "backbone" else 0.0
    optimizers[name] = make_optimizer(lr, wd)
    optimizers[name].build(variables)
  return optimizers


def load_pretrained_backbone(model: BackboneModel, workdir: str) -> str:
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
