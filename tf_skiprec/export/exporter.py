"""Export a trained model for TF Serving: `<base_dir>/<model_name>/<version>/`, an integer version
one above the highest there, written in a temporary folder and renamed into place once checked.

The export holds the ServingModule's three signatures (tf_skiprec/export/serving_module.py), the item
vocabulary and the id map as assets (raw ids in, raw ids out), and TF Serving's warm-up file
`assets.extra/tf_serving_warmup_requests`. Before it is published, the export is loaded the way
TF Serving loads it (tf_skiprec/export/runner.py), its warm-up requests are replayed, and
its `serving_default` and `full` top-k are compared with the in-memory model's on sample
histories; on any difference the export is deleted and an ExportError raised.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tf_skiprec.data.idmap import IdMap
from tf_skiprec.data.pipeline import eval_batch_size
from tf_skiprec.errors import ExportError
from tf_skiprec.export.runner import WARMUP_FILE, SavedModelRunner
from tf_skiprec.export.serving_module import PADDING, ServingModule

VOCAB_FILE = "item_vocab.txt"
ID_MAP_FILE = "id_map.json"
TOLERANCE = 1e-4  # scores: conditional execution against the in-memory model's masking


def next_version(model_dir: str) -> int:
  """One above the highest integer version folder in model_dir (1 when there is none)."""
  if not os.path.isdir(model_dir):
    return 1
  versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
  return max(versions, default=0) + 1


def raw_histories(dense: np.ndarray, id_map: IdMap) -> np.ndarray:
  """Dense histories [B, L] (0 = padding) -> raw ids [B, L] as UTF-8 bytes (b"" = padding), the
  tensor a client sends."""
  dense = np.asarray(dense)
  raw = np.full(dense.shape, PADDING.encode(), dtype=object)
  raw[dense > 0] = [r.encode("utf-8") for r in id_map.decode(dense[dense > 0])]
  return raw


def decode_ids(raw: np.ndarray) -> np.ndarray:
  """A string tensor's values (bytes) -> str, same shape."""
  flat = [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in np.ravel(raw)]
  return np.array(flat, dtype=object).reshape(np.shape(raw)).astype(str)


def export_model(model, id_map: IdMap, *, base_dir: str, model_name: str, max_len: int,
                 sample_histories: np.ndarray, threshold: float, top_k: int = 10,
                 max_blocks: int | None = None) -> dict:
  """Exports `model` (BackboneModel or SkipRecModel) and returns {"path", "version"}.

  Args:
    sample_histories: [S, max_len] dense ids (0 = padding) to check the export on, and to warm
      TF Serving up with.
    threshold: serving_default's default keep threshold (a request may send its own): a block
      runs iff P(keep) >= threshold. A run exports at policy.threshold.
    top_k: serving_default's and full's default k.
    max_blocks: serving_default's default cap (a request may send its own): a row runs at most
      its max_blocks most probable blocks; None or 0 = no cap. A run exports policy.max_blocks.
  """
  lines = id_map.raw_ids.tolist()
  vocab_text = "\n".join(lines) + "\n"  # one pass over 1M ids, not 1M f-strings
  if PADDING in lines or vocab_text.count("\n") != len(lines) or "\r" in vocab_text:
    raise ExportError("an item id is empty or holds a line break: it cannot be served (\"\" is "
                      "the padding id and the vocabulary is one id per line).")
  model_dir = os.path.join(base_dir, model_name)
  os.makedirs(model_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=".assets-", dir=model_dir) as sources:
    vocab = os.path.join(sources, VOCAB_FILE)
    with open(vocab, "w", encoding="utf-8", newline="\n") as f:
      f.write(vocab_text)
    id_map.save(os.path.join(sources, ID_MAP_FILE))
    module = ServingModule(model, vocab, max_len, top_k=top_k, threshold=threshold,
                           max_blocks=max_blocks)
    module.id_map_file = tf.saved_model.Asset(os.path.join(sources, ID_MAP_FILE))
    staging = tempfile.mkdtemp(prefix=".export-", dir=model_dir)  # not an integer: TF Serving
    try:                                                           # ignores it
      tf.saved_model.save(module, staging, signatures=module.signatures())
      raw = raw_histories(sample_histories, id_map)
      write_warmup(staging, model_name, raw)
      check_export(staging, model, id_map, sample_histories, top_k, threshold, max_blocks)
      os.chmod(staging, 0o755)  # mkdtemp makes it private; the server may run as another user
      version = _publish(staging, model_dir)
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)
      raise
  path = os.path.join(model_dir, str(version))
  logging.info("Exported version %d to %s.", version, path)
  return {"path": path, "version": version}


WARMUP_BATCH = 64  # rows of the largest warm-up request; TF Serving refuses more than its batch


def write_warmup(export_dir: str, model_name: str, histories: np.ndarray) -> int:
  """Writes TF Serving's warm-up file: Predict requests of one and of all histories (at most
  WARMUP_BATCH: serving/batching_parameters.txt's max_batch_size) for each signature, left-padded
  to the full window as the client sends them. Returns the count."""
  from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # noqa: PLC0415

  path = os.path.join(export_dir, WARMUP_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  count = 0
  with tf.io.TFRecordWriter(path) as writer:
    for signature in ("serving_default", "full", "decisions"):
      for batch in (histories[:1], histories[:WARMUP_BATCH]):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs["history"].CopyFrom(tf.make_tensor_proto(batch))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())
        count += 1
  return count


def check_export(export_dir: str, model, id_map: IdMap, histories: np.ndarray,
                 top_k: int, threshold: float, max_blocks: int | None = None) -> None:
  """Loads the export as TF Serving does, replays its warm-up, and compares its top-k with the
  in-memory model's (decisions at `threshold` and `max_blocks`, the export's defaults, and every
  block). Raises ExportError.

  The in-memory model scores the histories in chunks whose [chunk, V] scores stay within the
  evaluation bound (tf_skiprec.data.pipeline.MAX_EVAL_SCORES), whatever the catalogue.
  """
  runner = SavedModelRunner(export_dir)
  try:
    runner.warm_up()
    raw = raw_histories(histories, id_map)
    chunk = eval_batch_size(len(histories), id_map.vocab_size)
    for signature in ("serving_default", "full"):
      out = runner.run({"history": raw}, signature)
      ids = id_map.encode(decode_ids(out["item_ids"]), unknown="pad")   # [S, k] dense
      if np.any(ids == 0):
        raise ExportError(f"{signature}: the export returned ids outside the id map.")
      expected, own, blocks = [], [], []
      for start in range(0, len(histories), chunk):
        dense = tf.constant(histories[start:start + chunk], tf.int32)
        keep = model.decisions(dense, threshold, max_blocks or None)   # [s, N]
        if signature == "full":
          keep = tf.ones_like(keep)
        scores = model.score(dense, block_mask=keep).numpy()[:, 1:]     # [s, V - 1]
        best = -np.partition(-scores, top_k - 1, axis=1)[:, :top_k]    # top k, any order
        expected.append(-np.sort(-best, axis=1))
        own.append(np.take_along_axis(scores, ids[start:start + chunk] - 1, axis=1))
        blocks.append(keep.numpy().sum(axis=1))
      _compare_top_k(signature, np.concatenate(expected), np.concatenate(own), out, top_k)
      blocks = np.concatenate(blocks)
      if not np.all(out["blocks_executed"] == blocks):
        raise ExportError(f"{export_dir}: {signature} executed {out['blocks_executed'].tolist()} "
                          f"blocks, the in-memory model {blocks.tolist()}.")
  finally:
    runner.close()


def _compare_top_k(signature: str, expected: np.ndarray, own: np.ndarray, out: dict,
                   top_k: int) -> None:
  """expected [S, k]: the in-memory model's top-k scores; own [S, k]: its scores of the items the
  export returned. The export's top-k must carry the in-memory top-k scores, and each of its items
  must score that much in memory (ties may swap)."""
  if not (np.allclose(out["scores"], expected, atol=TOLERANCE)
          and np.allclose(own, out["scores"], atol=TOLERANCE)):
    worst = float(np.max(np.abs(out["scores"] - expected)))
    raise ExportError(f"{signature}: the exported model's top-{top_k} differs from the in-memory "
                      f"model's (largest score difference {worst:.3g}); the export is refused.")


def _publish(staging: str, model_dir: str) -> int:
  """Renames staging to the next free integer version (atomic on one file system)."""
  for _ in range(100):
    version = next_version(model_dir)
    try:
      os.rename(staging, os.path.join(model_dir, str(version)))
      return version
    except OSError:
      if not os.path.exists(os.path.join(model_dir, str(version))):
        raise
  raise ExportError(f"{model_dir}: could not claim a new version folder.")
