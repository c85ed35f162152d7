"""The export: conditional execution against masking, what runs, the versioned layout, the
self-check, the warm-up file and device placement."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from conftest import histories, tiny_skiprec, traced_blocks
from tf_skiprec.errors import ExportError
from tf_skiprec.export.exporter import export_model, next_version, raw_histories
from tf_skiprec.export.runner import WARMUP_FILE, SavedModelRunner, SignatureError
from tf_skiprec.export.serving_module import ONE_USER_GROUP, ServingModule

ITEMS, BLOCKS, MAX_LEN = 40, 6, 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny SkipRec model (block 2 kept by no one), exported once."""
  tf.keras.utils.set_random_seed(7)
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN, never_kept=2)
  base = str(tmp_path_factory.mktemp("models"))
  info = export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec",
                      max_len=MAX_LEN,
                      sample_histories=histories(ITEMS, 8, MAX_LEN), top_k=5)
  return model, id_map, base, info


def _module(model, tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"x{i}\n" for i in range(ITEMS)))
  return ServingModule(model, str(vocab), MAX_LEN)


def test_gather_scatter_equals_masking_for_mixed_decisions(tmp_path):
  model, _ = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN)
  module = _module(model, tmp_path)
  ids = tf.constant(histories(ITEMS, 7, MAX_LEN, seed=3))
  keep = np.random.default_rng(0).random((7, BLOCKS)) < 0.5
  keep[:, 0] = True    # every row: the block runs directly
  keep[:, 1] = False   # no row: the block is not run
  keep[0, 1] = False
  masked = model.backbone(ids, block_mask=keep.astype(np.float32)).numpy()
  run = tf.function(module.run_kept_blocks)  # graph mode, as exported
  np.testing.assert_allclose(run(ids, tf.constant(keep)).numpy(), masked, atol=1e-5)
  for row in range(3):  # B = 1: tf.cond per block
    one = run(ids[row:row + 1], tf.constant(keep[row:row + 1])).numpy()
    np.testing.assert_allclose(one, masked[row:row + 1], atol=1e-5)
  assert not np.allclose(masked, model.backbone(ids).numpy(), atol=1e-3)  # decisions matter


def test_a_block_no_row_keeps_is_not_executed_and_kept_blocks_run_on_their_rows(exported):
  model, id_map, _, info = exported
  dense = histories(ITEMS, 8, MAX_LEN)
  keep = model.decisions(tf.constant(dense), 0.5).numpy().astype(bool)         # [8, N]
  assert not keep[:, 2].any() and keep.any(axis=0).sum() >= 3             # mixed, block 2 never
  runner = SavedModelRunner(info["path"])
  try:
    # relus: block -> batch sizes of the ReLUs (after each conv + LayerNorm) that ran in it
    ran, relus = traced_blocks(runner, {"history": raw_histories(dense, id_map)}, BLOCKS)
  finally:
    runner.close()
  assert 2 not in ran                                        # kept by no row: not one op ran
  for i in range(BLOCKS):
    if keep[:, i].any():
      assert relus[i] == [int(keep[:, i].sum())] * 2, (i, relus.get(i))  # on its rows only
  # One user (a functional If per block): exactly the blocks its row keeps ran.
  patterns = {tuple(row) for row in keep}
  assert len(patterns) >= 2
  for row in [int(np.flatnonzero([tuple(r) == p for r in keep])[0]) for p in patterns]:
    runner = SavedModelRunner(info["path"])
    try:
      ran, _ = traced_blocks(runner, {"history": raw_histories(dense[row:row + 1], id_map)},
                             BLOCKS)
    finally:
      runner.close()
    assert ran == set(np.flatnonzero(keep[row]).tolist()), (row, ran)


def test_max_blocks_caps_each_row_at_its_m_most_probable_blocks_in_the_export(exported):
  # serving_default and decisions with a per-row max_blocks: every row runs at most its own m
  # blocks, the m its policy ranks highest (threshold 0: exactly m), in a batch and alone, and
  # the top-k is the in-memory model's under the same capped decisions.
  model, id_map, _, info = exported
  dense = histories(ITEMS, 6, MAX_LEN, seed=4)
  raw = raw_histories(dense, id_map)
  caps = np.array([0, 1, 2, 3, 5, BLOCKS], np.int32)
  prob = tf.nn.softmax(model.policy(tf.constant(dense)), axis=-1)[..., 1].numpy()   # [6, N]
  runner = SavedModelRunner(info["path"])
  try:
    for threshold in (0.0, 0.5):
      inputs = {"history": raw, "threshold": np.full([6], threshold, np.float32),
                "max_blocks": caps}
      keep = runner.run(inputs, "decisions")["keep"].astype(bool)                  # [6, N]
      out = runner.run(inputs)
      alone = [runner.run({k: v[row:row + 1] for k, v in inputs.items()})["blocks_executed"][0]
               for row in range(6)]
      for row, m in enumerate(caps):
        above = prob[row] >= threshold
        ranked = np.argsort(-prob[row], kind="stable")[:m]        # its m most probable blocks
        expected = np.zeros(BLOCKS, bool)
        expected[ranked] = True
        np.testing.assert_array_equal(keep[row], expected & above, err_msg=f"row {row}")
        assert keep[row].sum() <= m
        if threshold == 0.0:
          assert keep[row].sum() == m
      np.testing.assert_array_equal(out["blocks_executed"], keep.sum(axis=1))
      np.testing.assert_array_equal(alone, keep.sum(axis=1))      # each row keeps its own m
      scores = model.score(tf.constant(dense), block_mask=keep.astype(np.float32)).numpy()[:, 1:]
      top = -np.sort(-scores, axis=1)[:, :5]
      np.testing.assert_allclose(out["scores"], top, atol=1e-4)
      in_memory = model.decisions(tf.constant(dense), threshold, tf.constant(caps)).numpy()
      np.testing.assert_array_equal(in_memory.astype(bool), keep)   # the same cap in memory
    with pytest.raises(SignatureError, match="max_blocks must be at least 0"):
      runner.run({"history": raw[:1], "max_blocks": np.array([-1], np.int32)})
  finally:
    runner.close()


def test_versions_increase_and_only_whole_versions_are_visible(exported, tmp_path):
  model, id_map, base, info = exported
  model_dir = os.path.join(base, "skiprec")
  assert info["version"] == 1 and next_version(model_dir) == 2
  second = export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec",
                        max_len=MAX_LEN,
                        sample_histories=histories(ITEMS, 4, MAX_LEN), top_k=5)
  assert second["version"] == 2
  assert sorted(os.listdir(model_dir)) == ["1", "2"]         # no temporary folder left behind
  for name in ("saved_model.pb", "variables", os.path.join("assets", "item_vocab.txt"),
               os.path.join("assets", "id_map.json"), WARMUP_FILE):
    assert os.path.exists(os.path.join(info["path"], name)), name
  records = list(tf.data.TFRecordDataset(os.path.join(info["path"], WARMUP_FILE)))
  assert len(records) == 6                                   # 3 signatures x (1, all) histories


def test_an_export_that_differs_from_the_model_is_refused(exported, monkeypatch):
  model, id_map, base, _ = exported
  real = ServingModule.run_all_blocks

  def drops_the_last_block(self, ids):
    blocks = self.blocks
    self.blocks = blocks[:-1]
    try:
      return real(self, ids)
    finally:
      self.blocks = blocks

  monkeypatch.setattr(ServingModule, "run_all_blocks", drops_the_last_block)
  before = sorted(os.listdir(os.path.join(base, "skiprec")))
  with pytest.raises(ExportError, match="full: the exported model's top-5 differs"):
    export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec",
                 max_len=MAX_LEN,
                 sample_histories=histories(ITEMS, 4, MAX_LEN), top_k=5)
  assert sorted(os.listdir(os.path.join(base, "skiprec"))) == before  # nothing published


def test_a_head_layer_norm_is_exported_with_the_model(tmp_path):
  # model.final_norm: the softmax reads LayerNorm(hidden). The export's scores are the in-memory
  # model's (its self-check compares top-5 ids; here the scores too), and the norm matters.
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN, final_norm=True)
  dense = histories(ITEMS, 8, MAX_LEN, seed=5)
  info = export_model(model, id_map, threshold=0.5, base_dir=str(tmp_path), model_name="skiprec",
                      max_len=MAX_LEN, sample_histories=dense, top_k=5)
  runner = SavedModelRunner(info["path"])
  try:
    served = runner.run({"history": raw_histories(dense, id_map)})
  finally:
    runner.close()
  ids = tf.constant(dense)
  hidden = model.backbone(ids, block_mask=model.decisions(ids, 0.5))[:, -1]     # [8, C]
  expected = -np.sort(-model.backbone.logits(hidden).numpy()[:, 1:], axis=1)[:, :5]
  np.testing.assert_allclose(served["scores"], expected, rtol=1e-4, atol=1e-4)
  without = -np.sort(-model.backbone.output_dense(hidden).numpy()[:, 1:], axis=1)[:, :5]
  assert np.abs(without - expected).max() > 0.1


@pytest.mark.parametrize("body", ["gru", "pool"])
def test_every_policy_body_exports_with_the_in_memory_decisions(body, tmp_path):
  # export_model refuses an export whose top-k or blocks differ from the in-memory model's on
  # the sample histories; the decisions are compared here as well.
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN, body=body)
  dense = histories(ITEMS, 8, MAX_LEN, seed=5)
  info = export_model(model, id_map, threshold=0.5, base_dir=str(tmp_path), model_name="m",
                      max_len=MAX_LEN, sample_histories=dense, top_k=5)
  keep = model.decisions(tf.constant(dense), 0.5).numpy()
  assert 0 < keep.sum() < keep.size                                     # mixed decisions
  runner = SavedModelRunner(info["path"])
  try:
    out = runner.run({"history": raw_histories(dense, id_map)}, "decisions")
  finally:
    runner.close()
  np.testing.assert_array_equal(out["keep"], keep)


def test_no_op_of_the_model_is_pinned_to_a_device(exported):
  """TF Serving's GPU build places unpinned ops on the GPU. Only TensorFlow's own checkpoint
  save/restore functions (file I/O, host-only by design) carry a device."""
  path = os.path.join(exported[3]["path"], "saved_model.pb")
  meta = saved_model_pb2.SavedModel.FromString(open(path, "rb").read()).meta_graphs[0]
  graph = meta.graph_def
  checkpoint = ("__inference__traced_save", "__inference__traced_restore")
  model_nodes = [n for f in graph.library.function if not f.signature.name.startswith(checkpoint)
                 for n in f.node_def]
  assert len(model_nodes) > 500
  assert {n.device for n in model_nodes} == {""}
  saver_ops = {meta.saver_def.save_tensor_name.split(":")[0], meta.saver_def.restore_op_name}
  for node in graph.node:
    if node.device:  # e.g. the checkpoint file name constant: it feeds the saver only
      users = {n.name for n in graph.node if any(i.split(":")[0] == node.name for i in n.input)}
      assert users and users <= saver_ops, (node.name, users)


def test_saved_model_cli_lists_the_three_signatures(exported):
  out = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                        "--all", "--dir", exported[3]["path"]], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  text = out.stdout
  for signature in ("serving_default", "full", "decisions"):
    assert f"signature_def['{signature}']" in text
  assert "inputs['history'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, -1)" in text
  assert f"outputs['keep'] tensor_info:\n        dtype: DT_INT32\n        shape: (-1, {BLOCKS})" \
      in text
  assert "inputs['threshold'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1)" in text


def test_unservable_item_ids_are_refused_before_writing(tmp_path):
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN)
  id_map.raw_ids[5] = ""
  with pytest.raises(ExportError, match="empty or holds a line break"):
    export_model(model, id_map, threshold=0.5, base_dir=str(tmp_path), model_name="m",
                 max_len=MAX_LEN, sample_histories=histories(ITEMS, 2, MAX_LEN))
  assert not os.path.exists(tmp_path / "m")


def test_one_user_conds_are_functional_and_batch_conds_lowered(exported):
  """serving_module._lowering sets a TensorFlow module flag; if a TensorFlow upgrade ignored it,
  the one-user path would silently pay for dead-branch propagation again."""
  path = os.path.join(exported[3]["path"], "saved_model.pb")
  graph = saved_model_pb2.SavedModel.FromString(open(path, "rb").read()).meta_graphs[0].graph_def
  lowered = {(op, lower): 0 for op in ("If", "Case") for lower in (True, False)}
  for function in graph.library.function:
    for node in function.node_def:
      op = {"StatelessIf": "If", "StatelessCase": "Case"}.get(node.op, node.op)
      if op in ("If", "Case"):
        lowered[op, node.attr["_lower_using_switch_merge"].b] += 1
  # serving_default: the dispatch If and one Case per group of blocks (B = 1) functional, two Ifs
  # per block (B > 1) lowered; decisions and full have none.
  assert lowered == {("If", True): 2 * BLOCKS, ("If", False): 1, ("Case", True): 0,
                     ("Case", False): -(-BLOCKS // ONE_USER_GROUP)}, lowered


def test_frozen_block_equals_the_trained_block_with_every_weight_random():
  from tf_skiprec.export.frozen import FrozenResidualBlock
  from tf_skiprec.layers import ResidualBlock
  block = ResidualBlock(8, kernel_size=3, dilation=2)
  x = tf.random.normal([3, 11, 8])
  mask = tf.constant(np.array([[0] * 4 + [1] * 7, [1] * 11, [0] * 10 + [1]], np.float32))[..., None]
  block(x, mask)                                               # builds the weights
  rng = np.random.default_rng(0)
  for weight in block.weights:                                 # kernels, biases, gammas, betas, alpha
    weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
  frozen = FrozenResidualBlock(block)
  expected = (x + block.branch(x, mask, training=False)).numpy()
  np.testing.assert_allclose(frozen.run(x, mask).numpy(), expected, atol=1e-5)
  assert not np.allclose(expected, x.numpy(), atol=1e-2)       # the block does something


def test_frozen_policy_equals_the_trained_policy_with_every_weight_random():
  from tf_skiprec.export.frozen import FrozenPolicy
  model, _ = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN)
  ids = tf.constant(histories(ITEMS, 5, MAX_LEN, seed=2))
  rng = np.random.default_rng(1)
  for weight in model.policy.weights:   # embedding, blocks, batch-norm statistics, head
    scale = 0.5 if "variance" not in weight.name else 1.0
    value = rng.normal(0.0, scale, weight.shape)
    weight.assign((np.abs(value) + 0.1 if "variance" in weight.name else value).astype(np.float32))
  expected = model.policy(ids, training=False).numpy()
  got = tf.function(FrozenPolicy(model.policy).__call__)(ids).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert expected.std() > 0.1                                   # the weights matter
