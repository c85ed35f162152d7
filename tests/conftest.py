"""Test set-up: tf_skiprec is imported first so Keras 2 is selected before TensorFlow loads."""

import tf_skiprec  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _seed():
  tf.keras.utils.set_random_seed(1234)
  np.random.seed(1234)
  yield


def set_alphas(backbone, value: float = 0.5) -> None:
  """ReZero alphas start at 0 (every block is the identity); tests that need the blocks to do
  something set them."""
  for block in backbone.blocks:
    block.alpha.assign(value)


def tiny_skiprec(num_items: int = 40, num_blocks: int = 6, max_len: int = 12,
                 never_kept: int | None = None, seed: int = 0, final_norm: bool = False,
                 body: str = "cnn", backbone: str = "nextitnet"):
  """A small SkipRec model whose policy gives mixed, user-dependent decisions, and its IdMap.

  The blocks do something (alphas 0.7); the policy's batch-norm variance is shrunk and its head
  scaled up so that P(keep) is far from the 0.9 it starts at; block `never_kept` is kept by no
  one. Raw ids are "item<i>", one of them non-ASCII ("élan"). `final_norm`: a LayerNorm before
  the softmax, with random gain and shift. `body`: the policy's body (policy.body);
  `backbone`: model.backbone ("sasrec": 2 heads, inner size 24).
  """
  from tf_skiprec.experiments import get_config
  from tf_skiprec.data.idmap import IdMap
  from tf_skiprec.training import builders

  config = get_config("smoke")
  config.train.mode = "gumbel"
  config.model.num_blocks = num_blocks
  config.data.max_len = max_len
  config.model.final_norm = final_norm
  config.policy.body = body
  config.model.backbone = backbone
  config.model.inner_size = 24
  model = builders.build_model(config, vocab_size=num_items + 1)
  set_alphas(model.backbone, 0.7)
  rng = np.random.default_rng(seed)
  norm = getattr(model.backbone, "head_norm", None)
  if final_norm and norm.weights:                 # (untied, SASRec's head norm has none)
    norm.gamma.assign(rng.uniform(0.5, 2.0, norm.gamma.shape).astype(np.float32))
    norm.beta.assign(rng.normal(0.0, 1.0, norm.beta.shape).astype(np.float32))
  model.policy.norm.moving_variance.assign(np.full(model.policy.norm.moving_variance.shape, 1e-4,
                                                   np.float32))
  head = model.policy.head
  head.kernel.assign(rng.normal(0.0, 1.0, head.kernel.shape).astype(np.float32))
  bias = np.zeros(head.bias.shape, np.float32)
  if never_kept is not None:
    bias[2 * never_kept + 1] = -1e4  # the keep logit of that block
  head.bias.assign(bias)
  raw = np.array([f"item{i}" for i in range(num_items)], dtype=object)
  raw[3] = "élan"
  id_map = IdMap(raw.astype(str), np.arange(num_items, 0, -1))
  return model, id_map


def histories(num_items: int, batch: int, max_len: int, seed: int = 0) -> np.ndarray:
  """[batch, max_len] dense left-padded histories of varied lengths (row 0 has 2 items)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, num_items + 1, size=(batch, max_len)).astype(np.int32)
  for row in range(batch):
    ids[row, : max(0, max_len - 2 - row * 3)] = 0
  return ids


def export_tiny_skiprec(base: str, seed: int, num_items: int = 40, num_blocks: int = 6,
                        max_len: int = 12, top_k: int = 5):
  """A tiny_skiprec (random seed `seed`) exported as base/skiprec/1 with threshold 0.5;
  returns (model, id_map). Raw ids need serving.* only in the caller."""
  from tf_skiprec.export.exporter import export_model  # noqa: PLC0415
  tf.keras.utils.set_random_seed(seed)
  model, id_map = tiny_skiprec(num_items, num_blocks, max_len)
  export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec", max_len=max_len,
               sample_histories=histories(num_items, 8, max_len), top_k=top_k)
  return model, id_map


def traced_blocks(runner, inputs: dict, num_blocks: int):
  """Runs the export's serving_default on `inputs` with a full trace -> (ran, relus): the blocks
  i any of whose ops (under "block_{i}_run/") ran, and per block the batch sizes of the ReLUs
  that ran in it."""
  options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
  metadata = tf.compat.v1.RunMetadata()
  runner.run(inputs, run_options=options, run_metadata=metadata)
  ran, relus = set(), {}
  for device in metadata.step_stats.dev_stats:
    for node in device.node_stats:
      for i in range(num_blocks):
        if f"block_{i}_run/" in node.node_name:
          ran.add(i)
          if " = Relu(" in node.timeline_label:
            relus.setdefault(i, []).append(node.output[0].tensor_description.shape.dim[0].size)
  return ran, relus
