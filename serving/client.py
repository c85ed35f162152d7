"""A gRPC client for a SkipRec model behind TF Serving (or the local server), as a library and a
command line:

  python -m serving.client --server localhost:8500 --model skiprec --history 12,7,99
  python -m serving.client --server localhost:8500 --model skiprec --history 12,7,99 \\
      --k 5 --threshold 0.7 --signature full
  python -m serving.client --server localhost:8500 --model skiprec --history 12,7,99 \
      --max_blocks 4                     # at most 4 blocks: the policy's 4 most probable

  client = SkipRecClient("localhost:8500", "skiprec")
  out = client.recommend([["12", "7", "99"], ["5"]], k=5)   # out.item_ids[0] -> ['50', ...]

Histories are always sent left-padded with "" to exactly the model's window (max_len, read once
from the model's metadata), and `k`, `threshold` and `max_blocks` are sent with one value per
history. TF
Serving's server-side batching concatenates requests along the first dimension and pads shorter
inputs at the END with the FIRST element of each request (tensorflow/serving issue 1279): a
shorter history would get real item ids appended after its last item. Full-length histories and
per-row k/threshold/max_blocks leave nothing for it to pad, so batched and unbatched answers are
the same.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import grpc
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)


PADDING = ""


@dataclasses.dataclass
class Recommendations:
  """One Predict answer. item_ids / scores: one list per history (its own k entries)."""
  item_ids: list[list[str]]
  scores: list[list[float]]
  blocks_executed: list[int]
  unknown_items: list[int]
  history_length: list[int]
  version: int


class SkipRecClient:
  """Talks to one model over TF Serving's PredictionService."""

  def __init__(self, server: str, model: str, *, version: int | None = None,
               timeout: float = 10.0, channel: grpc.Channel | None = None):
    self.model = model
    self.version = version
    self.timeout = timeout
    self._channel = channel or grpc.insecure_channel(server)
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._max_len: int | None = None

  def close(self) -> None:
    self._channel.close()

  def max_len(self) -> int:
    """The model's history window, from its `decisions` signature (output used_history)."""
    if self._max_len is None:
      request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
      self._spec(request.model_spec)
      response = self.stub.GetModelMetadata(request, timeout=self.timeout)
      signatures = get_model_metadata_pb2.SignatureDefMap()
      response.metadata["signature_def"].Unpack(signatures)
      shape = signatures.signature_def["decisions"].outputs["used_history"].tensor_shape
      self._max_len = int(shape.dim[1].size)
    return self._max_len

  def pad(self, histories: list[list]) -> np.ndarray:
    """Histories of raw ids (any length) -> [B, max_len] UTF-8 bytes, left-padded with ""."""
    width = self.max_len()
    out = np.full((len(histories), width), PADDING.encode(), dtype=object)
    for row, history in enumerate(histories):
      items = [str(item).encode("utf-8") for item in history][-width:] if width else []
      if items:
        out[row, width - len(items):] = items
    return out

  def predict(self, inputs: dict[str, np.ndarray], signature: str = "serving_default"
              ) -> tuple[dict[str, np.ndarray], int]:
    """Raw Predict: {alias: array} -> ({alias: array}, the version that answered)."""
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec)
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
      request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    response = self.stub.Predict(request, timeout=self.timeout)
    return ({alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()},
            response.model_spec.version.value)

  def recommend(self, histories: list[list], k: int | list[int] | None = None,
                threshold: float | list[float] | None = None, *, full: bool = False,
                max_blocks: int | list[int] | None = None) -> Recommendations:
    """Top-k raw item ids for each history (`full`: with every block executed; `max_blocks`: at
    most that many blocks per history, the ones its policy ranks highest)."""
    batch = len(histories)
    inputs = {"history": self.pad(histories)}
    if k is not None:
      inputs["k"] = np.broadcast_to(np.asarray(k, np.int32), [batch]).copy()
    if threshold is not None and not full:
      inputs["threshold"] = np.broadcast_to(np.asarray(threshold, np.float32), [batch]).copy()
    if max_blocks is not None and not full:
      inputs["max_blocks"] = np.broadcast_to(np.asarray(max_blocks, np.int32), [batch]).copy()
    out, version = self.predict(inputs, "full" if full else "serving_default")
    ks = inputs["k"] if "k" in inputs else [out["item_ids"].shape[1]] * batch
    ids = [[i.decode("utf-8") for i in row[:n]] for row, n in zip(out["item_ids"], ks)]
    return Recommendations(ids, [row[:n].tolist() for row, n in zip(out["scores"], ks)],
                           out["blocks_executed"].tolist(), out["unknown_items"].tolist(),
                           out["history_length"].tolist(), version)

  def decisions(self, histories: list[list], threshold: float | None = None,
                max_blocks: int | None = None) -> dict:
    """The policy's keep/skip matrix [B, N] (and P(keep)) for each history."""
    inputs = {"history": self.pad(histories)}
    if threshold is not None:
      inputs["threshold"] = np.full([len(histories)], threshold, np.float32)
    if max_blocks is not None:
      inputs["max_blocks"] = np.full([len(histories)], max_blocks, np.int32)
    out, _ = self.predict(inputs, "decisions")
    return out

  def _spec(self, spec) -> None:
    spec.name = self.model
    if self.version is not None:
      spec.version.value = self.version


def wait_until_available(server: str, model: str, timeout: float = 120.0,
                         watch: dict | None = None) -> None:
  """Returns once a version of `model` is AVAILABLE on `server` (GetModelStatus); raises
  RuntimeError after `timeout` s, or as soon as a process in `watch` ({what: Popen}, e.g. the
  server's) has exited."""
  from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc  # noqa: PLC0415
  channel = grpc.insecure_channel(server)
  stub = model_service_pb2_grpc.ModelServiceStub(channel)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = model
  deadline = time.monotonic() + timeout
  try:
    while time.monotonic() < deadline:
      for what, process in (watch or {}).items():
        if process.poll() is not None:
          raise RuntimeError(f"{what} stopped (exit code {process.returncode}) before {model} "
                             f"was served")
      try:
        status = stub.GetModelStatus(request, timeout=5).model_version_status
        if any(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in status):
          return
      except grpc.RpcError:
        pass
      time.sleep(0.5)
  finally:
    channel.close()
  raise RuntimeError(f"{server} served no version of {model} in {timeout:.0f} s")


SERVER = flags.DEFINE_string("server", "localhost:8500", "host:port of the gRPC server.")
MODEL = flags.DEFINE_string("model", "skiprec", "Model name.")
VERSION = flags.DEFINE_integer("version", None, "Model version (default: the latest).")
HISTORY = flags.DEFINE_list("history", None, "Raw item ids, oldest first, comma-separated.")
K = flags.DEFINE_integer("k", None, "How many items (default: the model's).")
THRESHOLD = flags.DEFINE_float("threshold", None, "Keep threshold; higher runs fewer blocks.")
MAX_BLOCKS = flags.DEFINE_integer("max_blocks", None, "Run at most this many blocks (the policy's "
                                  "most probable); with --threshold 0, exactly this many.")
SIGNATURE = flags.DEFINE_enum("signature", "serving_default",
                              ["serving_default", "full", "decisions"], "Which signature.")
TIMEOUT = flags.DEFINE_float("timeout", 10.0, "Seconds.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if HISTORY.value is None:
    raise app.UsageError("--history is required, e.g. --history 12,7,99")
  client = SkipRecClient(SERVER.value, MODEL.value, version=VERSION.value, timeout=TIMEOUT.value)
  try:
    if SIGNATURE.value == "decisions":
      out = client.decisions([HISTORY.value], THRESHOLD.value, MAX_BLOCKS.value)
      keep = out["keep"][0]
      print(f"keep/skip per block: {''.join('K' if x else '.' for x in keep)} "
            f"({int(keep.sum())} of {len(keep)} blocks)")
      return 0
    rec = client.recommend([HISTORY.value], K.value, THRESHOLD.value,
                           full=SIGNATURE.value == "full", max_blocks=MAX_BLOCKS.value)
  except grpc.RpcError as e:
    print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  finally:
    client.close()
  print(f"model {MODEL.value} version {rec.version}: {rec.blocks_executed[0]} blocks executed, "
        f"{rec.history_length[0]} history items used, {rec.unknown_items[0]} unknown")
  for rank, (item, score) in enumerate(zip(rec.item_ids[0], rec.scores[0]), start=1):
    print(f"{rank:>3}  {item:<20} {score:.4f}")
  return 0


if __name__ == "__main__":
  app.run(main)
