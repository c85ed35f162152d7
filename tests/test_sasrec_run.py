"""SkipRec's method on the SASRec backbone, through the same loop as NextItNet+: every mode and
loss trains its weights, and a run pretrains, fine-tunes the policy, reports, sweeps and exports."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import set_alphas
from tf_skiprec.compute import attention_block_flops, conv_block_flops
from tf_skiprec.experiments import get_config
from tf_skiprec.training import builders, run
from tf_skiprec.training.builders import make_schedules


def _sasrec_config(mode: str, loss: str = "full"):
  config = get_config("smoke")                   # 4 blocks x 16 channels, window 20
  config.model.backbone = "sasrec"
  config.train.mode, config.train.loss, config.train.num_sampled = mode, loss, 20
  config.policy.initial_keep_prob = 0.6          # sampled decisions differ from the greedy ones
  return config


@pytest.mark.parametrize("mode, loss", [("pretrain", "full"), ("pretrain", "sampled"),
                                        ("gumbel", "full"), ("gumbel", "sampled"),
                                        ("rl", "full")])
def test_every_mode_and_loss_reaches_every_sasrec_weight(mode, loss):
  config = _sasrec_config(mode, loss)
  model = builders.build_model(config, vocab_size=61)
  set_alphas(model.backbone, 0.5)                # at 0 a block's inner weights get no gradient
  seq = tf.constant(np.random.default_rng(0).integers(1, 61, size=(8, 21)), tf.int32)
  with tf.GradientTape() as tape:
    loss_value, _ = model.compute_loss_and_stats(
        {"inputs": seq[:, :-1], "labels": seq[:, 1:]}, training=True)
  backbone = model.variable_groups()["backbone"]
  grads = tape.gradient(loss_value, backbone)
  assert np.isfinite(float(loss_value))
  reached = {v.ref() for v, g in zip(backbone, grads)
             if g is not None and float(tf.norm(tf.convert_to_tensor(g))) > 0}
  sasrec = model.backbone
  assert not sasrec.head_norm.weights              # untied: the softmax absorbs its gamma, beta
  for layer in (sasrec.position_embedding, sasrec.embedding_norm, sasrec.output_dense,
                *sasrec.blocks):                  # every weight of every block, each projection
    missed = [v.name for v in layer.trainable_weights if v.ref() not in reached]
    assert not missed and layer.trainable_weights, (layer.name, missed)
  assert len(sasrec.blocks[0].trainable_weights) == 17


def test_a_sasrec_skiprec_run_pretrains_learns_to_skip_reports_and_exports(tmp_path):
  config = _sasrec_config("gumbel")
  config.train.pretrain_epochs = 2
  config.export.base_dir = str(tmp_path / "models")
  result = run(config, str(tmp_path / "w"))
  blocks = result["test_blocks"]
  assert blocks["num_blocks"] == 4
  assert result["test_compute"]["blocks"] == pytest.approx(
      blocks["mean"] * attention_block_flops(config) / 1e6)       # SASRec's blocks are counted
  # The budget is compute: the blocks aim at it less the cnn policy's share of SASRec's blocks
  # (2 NextItNet+ blocks + its head, against 4 attention blocks), not of NextItNet+'s.
  share = (2 * conv_block_flops(config, 3) + 2 * 16 * 2 * 4) / (4 * attention_block_flops(config))
  assert make_schedules(config).budget(10 ** 6).numpy() == pytest.approx(
      config.policy.budget - share)
  assert [row["max_blocks"] for row in result["max_blocks_sweep"]][-1] == 4
  assert os.path.isdir(tmp_path / "w" / "pretrain" / "best")
  with open(tmp_path / "w" / "config.json") as f:
    assert json.load(f)["model"]["backbone"] == "sasrec"
  versions = os.listdir(tmp_path / "models" / "skiprec")
  assert versions == ["1"]                       # exported, after its self-check passed
