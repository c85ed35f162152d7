"""Runs a SavedModel's signatures the way TF Serving does: a Session on the `serve` MetaGraph,
inputs and outputs by their SignatureDef names, defaults for inputs a request leaves out.

TF Serving (tensorflow_serving/servables/tensorflow/predict_util.cc and
tensorflow/cc/saved_model/util.cc GetInputValues): an unknown signature is FAILED_PRECONDITION;
more inputs than the signature has, an input it does not know, or a missing input without a
default is INVALID_ARGUMENT; a tensor of the wrong dtype is rejected by the Session
(INVALID_ARGUMENT); so is one the graph cannot take (a wrong rank). Python's Session.run would
quietly convert dtypes, so the dtype and rank checks are made here, before running.

Used by tf_skiprec.export (to check an export before it is published) and by the local
PredictionService server (serving/).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class SignatureError(Exception):
  """A request the model cannot run. `code` is a gRPC status name, e.g. "INVALID_ARGUMENT"."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


class SavedModelRunner:
  """One loaded SavedModel version. Thread-safe: Session.run may be called concurrently."""

  def __init__(self, export_dir: str, *, intra_op_threads: int = 0, inter_op_threads: int = 0):
    self.export_dir = export_dir
    self.graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                      inter_op_parallelism_threads=inter_op_threads)
    self.session = tf.compat.v1.Session(graph=self.graph, config=config)
    with self.graph.as_default():
      self.meta_graph: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
          self.session, [tf.saved_model.SERVING], export_dir)
    self.signatures = dict(self.meta_graph.signature_def)
    self._defaults = {name: {alias: tf.make_ndarray(proto) for alias, proto in sig.defaults.items()}
                      for name, sig in self.signatures.items()}
    self._closed = False
    self._active = 0                      # runs in flight; close() waits for them
    self._idle = threading.Condition()

  def run(self, inputs: dict[str, np.ndarray], signature_name: str = "",
          output_filter: list[str] | None = None, run_options=None, run_metadata=None
          ) -> dict[str, np.ndarray]:
    """inputs {alias: array} -> outputs {alias: array}. Raises SignatureError."""
    name = signature_name or DEFAULT_SIGNATURE
    if name not in self.signatures:
      raise SignatureError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    signature = self.signatures[name]
    feeds = self._feeds(name, signature, inputs)
    aliases = list(output_filter or signature.outputs.keys())
    for alias in aliases:
      if alias not in signature.outputs:
        raise SignatureError("INVALID_ARGUMENT", f"output tensor alias not found in signature: "
                             f"{alias} Outputs expected to be in the set "
                             f"{{{','.join(sorted(signature.outputs))}}}.")
    fetches = [signature.outputs[alias].name for alias in aliases]
    with self._idle:
      if self._closed:
        raise SignatureError("UNAVAILABLE", f"{self.export_dir} has been unloaded.")
      self._active += 1
    try:
      values = self.session.run(fetches, feeds, options=run_options, run_metadata=run_metadata)
    except tf.errors.OpError as e:
      raise SignatureError(_code_name(e), _first_line(e.message))
    finally:
      with self._idle:
        self._active -= 1
        self._idle.notify_all()
    return dict(zip(aliases, values))

  def warm_up(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests (Predict requests) as TF Serving does on
    load; returns how many ran. A failing warm-up request fails the load."""
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415 (serving extra)
    path = os.path.join(self.export_dir, WARMUP_FILE)
    if not os.path.exists(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      log = prediction_log_pb2.PredictionLog.FromString(record)
      if not log.HasField("predict_log"):
        raise SignatureError("INVALID_ARGUMENT", f"{path}: unsupported warm-up log type.")
      request = log.predict_log.request
      inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
      self.run(inputs, request.model_spec.signature_name, list(request.output_filter) or None)
      count += 1
    return count

  def close(self, timeout: float = 60.0) -> None:
    """Refuses new runs, waits up to `timeout` s for those in flight, closes the Session."""
    with self._idle:
      if self._closed:
        return
      self._closed = True
      self._idle.wait_for(lambda: self._active == 0, timeout=timeout)
    self.session.close()

  def _feeds(self, name: str, signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    unknown = sorted(set(inputs) - set(signature.inputs))
    if len(inputs) > len(signature.inputs) or unknown:
      raise SignatureError(
          "INVALID_ARGUMENT", f"input size does not match signature: {len(inputs)}!="
          f"{len(signature.inputs)} len({{{','.join(sorted(inputs))}}}) != "
          f"len({{{','.join(sorted(signature.inputs))}}}). Sent extra: {{{','.join(unknown)}}}.")
    feeds = {}
    for alias, info in signature.inputs.items():
      if alias in inputs:
        value = np.asarray(inputs[alias])
      elif alias in self._defaults[name]:
        value = self._defaults[name][alias]
      else:
        raise SignatureError(
            "INVALID_ARGUMENT", f"Signature input alias: {alias}(feed name: {info.name}) not "
            f"found in request and no default value provided. Inputs expected to be in the "
            f"request {{{','.join(sorted(inputs))}}}, or default input alias set: "
            f"{','.join(sorted(self._defaults[name]))}")
      _check_tensor(alias, info, value)
      feeds[info.name] = value
    return feeds


def _check_tensor(alias: str, info, value: np.ndarray) -> None:
  """The dtype must be the signature's exactly; the rank must match when the signature has one."""
  expected = tf.dtypes.as_dtype(info.dtype)
  got = _dtype_of(value)
  if got != expected:
    got_name = got.name if got is not None else str(value.dtype)
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': expects {expected.name} but "
                         f"{got_name} is provided.")
  if not info.tensor_shape.unknown_rank and value.ndim != len(info.tensor_shape.dim):
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': expects rank "
                         f"{len(info.tensor_shape.dim)} but a tensor of shape "
                         f"{list(value.shape)} is provided.")


def _dtype_of(value: np.ndarray):
  if value.dtype.kind in ("O", "S", "U"):
    return tf.string
  try:
    return tf.dtypes.as_dtype(value.dtype)
  except TypeError:
    return None


_CODE_NAMES = {getattr(tf.errors, name): name for name in (
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")}


def _code_name(error: tf.errors.OpError) -> str:
  """The status name of a TensorFlow error, e.g. "INVALID_ARGUMENT"."""
  return _CODE_NAMES.get(error.error_code, "UNKNOWN")


def _first_line(message: str) -> str:
  """The error itself, without Python's "Graph execution error:" heading, the "Detected at node"
  stack and the "[[{{node ...}}]]" suffix that TF appends."""
  for paragraph in message.strip().split("\n\n"):
    paragraph = paragraph.strip()
    if not paragraph or paragraph == "Graph execution error:" or paragraph.startswith("Detected at"):
      continue
    lines = [line for line in paragraph.splitlines() if not line.strip().startswith("[[")]
    return " ".join(line.strip() for line in lines)
  return message.strip()
