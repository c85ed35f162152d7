"""The export of SkipRec on the SASRec backbone: the frozen attention block against the trained
one, gather/scatter against masking, what runs (a trace), and the served top-k, scores and
decisions against the in-memory model. tests/test_export.py covers what does not depend on the
backbone (versions, the self-check's refusal, device placement, the signatures' shapes)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import histories, tiny_skiprec, traced_blocks
from tf_skiprec.export.exporter import export_model, raw_histories
from tf_skiprec.export.runner import WARMUP_FILE, SavedModelRunner
from tf_skiprec.export.serving_module import ServingModule

ITEMS, BLOCKS, MAX_LEN = 40, 6, 12


def _model(**kwargs):
  """A tiny SkipRec-SASRec with mixed decisions, and random position embeddings, embedding norm
  and head norm (so that an export that dropped any of them would score differently)."""
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN, backbone="sasrec", final_norm=True,
                               **kwargs)                 # final_norm: the head norm randomised
  rng = np.random.default_rng(11)
  backbone = model.backbone
  backbone.position_embedding.embeddings.assign(
      rng.normal(0.0, 1.0, backbone.position_embedding.embeddings.shape).astype(np.float32))
  backbone.embedding_norm.gamma.assign(
      rng.uniform(0.5, 2.0, backbone.embedding_norm.gamma.shape).astype(np.float32))
  backbone.embedding_norm.beta.assign(
      rng.normal(0.0, 0.5, backbone.embedding_norm.beta.shape).astype(np.float32))
  return model, id_map


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  tf.keras.utils.set_random_seed(7)
  model, id_map = _model(never_kept=2)
  base = str(tmp_path_factory.mktemp("models"))
  info = export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec",
                      max_len=MAX_LEN, sample_histories=histories(ITEMS, 8, MAX_LEN), top_k=5)
  return model, id_map, info


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_frozen_attention_block_equals_the_trained_block_with_every_weight_random(activation):
  from tf_skiprec.attention import AttentionBlock
  from tf_skiprec.export.frozen import FrozenAttentionBlock
  block = AttentionBlock(8, num_heads=2, inner_size=12, activation=activation)
  x = tf.random.normal([3, 11, 8])
  mask = tf.constant(np.array([[0] * 4 + [1] * 7, [1] * 11, [0] * 10 + [1]], np.float32))[..., None]
  block(x, mask)                                               # builds the weights
  rng = np.random.default_rng(0)
  for weight in block.weights:      # projections, FFN, norms, alpha: every one of them random
    weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
  frozen = FrozenAttentionBlock(block)
  expected = (x + block.branch(x, mask, training=False)).numpy()
  np.testing.assert_allclose(frozen.run(x, mask).numpy(), expected, atol=1e-5)
  assert not np.allclose(expected, x.numpy(), atol=1e-2)       # the block does something
  assert len(block.weights) == 17      # alpha, 2 norms, 4 projections, 2 FFN layers: all random


def test_gather_scatter_equals_masking_for_mixed_decisions(tmp_path):
  model, _ = _model()
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"x{i}\n" for i in range(ITEMS)))
  module = ServingModule(model, str(vocab), MAX_LEN)
  ids = tf.constant(histories(ITEMS, 7, MAX_LEN, seed=3))
  keep = np.random.default_rng(0).random((7, BLOCKS)) < 0.5
  keep[:, 0] = True    # every row: the block runs directly
  keep[:, 1] = False   # no row: the block is not run
  masked = model.backbone(ids, block_mask=keep.astype(np.float32)).numpy()
  run = tf.function(module.run_kept_blocks)  # graph mode, as exported
  np.testing.assert_allclose(run(ids, tf.constant(keep)).numpy(), masked, atol=1e-5)
  for row in range(3):  # B = 1: a Case per group of blocks
    one = run(ids[row:row + 1], tf.constant(keep[row:row + 1])).numpy()
    np.testing.assert_allclose(one, masked[row:row + 1], atol=1e-5)
  assert not np.allclose(masked, model.backbone(ids).numpy(), atol=1e-3)  # decisions matter


def test_a_block_no_row_keeps_is_not_executed_and_kept_blocks_run_on_their_rows(exported):
  model, id_map, info = exported
  dense = histories(ITEMS, 8, MAX_LEN)
  keep = model.decisions(tf.constant(dense), 0.5).numpy().astype(bool)        # [8, N]
  assert not keep[:, 2].any() and keep.any(axis=0).sum() >= 3
  runner = SavedModelRunner(info["path"])
  try:
    # relus: block -> batch sizes of the feed-forward ReLU (one per attention block) that ran
    ran, relus = traced_blocks(runner, {"history": raw_histories(dense, id_map)}, BLOCKS)
    assert 2 not in ran                                        # kept by no row: not one op ran
    for i in range(BLOCKS):
      if keep[:, i].any():
        assert relus[i] == [int(keep[:, i].sum())], (i, relus.get(i))   # on its rows only
    for row in range(3):                                       # one user: exactly its blocks
      ran, _ = traced_blocks(runner, {"history": raw_histories(dense[row:row + 1], id_map)},
                             BLOCKS)
      assert ran == set(np.flatnonzero(keep[row]).tolist()), (row, ran)
  finally:
    runner.close()


def test_the_served_top_k_scores_and_decisions_are_the_in_memory_models(exported):
  model, id_map, info = exported
  dense = histories(ITEMS, 8, MAX_LEN, seed=5)
  ids = tf.constant(dense)
  runner = SavedModelRunner(info["path"])
  try:
    raw = raw_histories(dense, id_map)
    served = runner.run({"history": raw})
    full = runner.run({"history": raw}, "full")
    decided = runner.run({"history": raw}, "decisions")
    alone = [runner.run({"history": raw[row:row + 1]}) for row in range(3)]
  finally:
    runner.close()
  keep = model.decisions(ids, 0.5).numpy()
  assert 0 < keep.sum() < keep.size
  np.testing.assert_array_equal(decided["keep"], keep)
  np.testing.assert_array_equal(served["blocks_executed"], keep.sum(axis=1))
  for out, mask in ((served, keep), (full, None)):
    scores = model.score(ids, block_mask=mask).numpy()[:, 1:]                # [8, V - 1]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(out["scores"], np.take_along_axis(scores, order, 1), atol=1e-4)
    got = [[raw_id.decode("utf-8") for raw_id in row] for row in out["item_ids"]]
    assert got == id_map.raw_ids[order].tolist()
  for row, one in enumerate(alone):
    np.testing.assert_allclose(one["scores"][0], served["scores"][row], atol=1e-4)
  assert np.abs(served["scores"] - full["scores"]).max() > 1e-3           # skipping matters
  assert os.path.exists(os.path.join(info["path"], WARMUP_FILE))


def test_an_export_window_beyond_the_position_table_is_refused(tmp_path):
  model, _ = _model()
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"x{i}\n" for i in range(ITEMS)))
  with pytest.raises(ValueError, match=f"positions for {MAX_LEN} items only.*Fix"):
    ServingModule(model, str(vocab), MAX_LEN + 1)


def test_an_export_cap_beyond_the_blocks_is_refused(tmp_path):
  model, _ = _model()
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"x{i}\n" for i in range(ITEMS)))
  n = model.backbone.num_blocks
  with pytest.raises(ValueError, match=f"max_blocks={n + 1}: the backbone has {n} blocks.*Fix"):
    ServingModule(model, str(vocab), MAX_LEN, max_blocks=n + 1)
  assert ServingModule(model, str(vocab), MAX_LEN, max_blocks=n).default_max_blocks == n
