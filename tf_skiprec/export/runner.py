"""Runs a SavedModel's signatures the way TF Serving does: a Session on the `serve` MetaGraph,
inputs and outputs by their SignatureDef names, defaults for inputs a request leaves out.

TF Serving (tensorflow_serving/servables/tensorflow/predict_util.cc and
tensorflow/cc/saved_model/util.cc GetInputValues): an unknown signature is FAILED_PRECONDITION;
more inputs than the signature has, an input it does not know, or a missing input without a
default is INVALID_ARGUMENT; a tensor of the wrong dtype is rejected by the Session
(INVALID_ARGUMENT); so is one the graph cannot take (a wrong rank). Python's Session.run would
quietly convert dtypes, so the dtype and rank checks are made here, before running.

A request is validated once, in one place: `prepare` resolves the signature and checks the input
aliases, and `Request.run` checks every tensor (dtype, rank, batch) before running; the servers
parse their wire formats in between (serving/) and check nothing of this themselves.

Also refused, before running: a duplicate output_filter alias (as predict_util.cc does), and,
stricter than TF Serving so that no request gets an error from deep inside the graph or makes it
build what it cannot: signatures whose key starts with "__" (`__saved_model_init_op`), an empty
batch (a zero-sized first dimension where the signature's is unknown), and with `max_batch` a
batch of more rows (as TF Serving with batching refuses one over max_batch_size; a
[2**31 - 1, 0] history holds no values but would make the graph build 2**31 rows). Every message
names the input (quoted, as 'k') and the fix. All of a signature's outputs are always fetched and
the output_filter applied afterwards, so one executor serves every filter.

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

  def __init__(self, export_dir: str, *, intra_op_threads: int = 0, inter_op_threads: int = 0,
               max_batch: int | None = None):
    self.export_dir = export_dir
    self.max_batch = max_batch            # rows of one request; None: any
    self.graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                      inter_op_parallelism_threads=inter_op_threads)
    self.session = tf.compat.v1.Session(graph=self.graph, config=config)
    with self.graph.as_default():
      self.meta_graph: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
          self.session, [tf.saved_model.SERVING], export_dir)
    self.signatures = dict(self.meta_graph.signature_def)     # every key, "__" ones included
    # {signature: {alias: the default value of an input a request may leave out}}
    self.defaults = {name: {alias: tf.make_ndarray(proto) for alias, proto in sig.defaults.items()}
                      for name, sig in self.signatures.items()}
    self._closed = False
    self._active = 0                      # runs in flight; close() waits for them
    self._idle = threading.Condition()

  def servable(self) -> list[str]:
    """The signature keys a request may name (not "__saved_model_init_op" and the like)."""
    return sorted(name for name in self.signatures if not name.startswith("__"))

  def signature(self, signature_name: str = ""):
    """The SignatureDef a request names ("" = serving_default); FAILED_PRECONDITION otherwise."""
    name = signature_name or DEFAULT_SIGNATURE
    if name.startswith("__") or name not in self.signatures:
      raise SignatureError("FAILED_PRECONDITION", f'Serving signature key "{short(name)}" not '
                           f"found. Fix: name one of {', '.join(self.servable())} in "
                           "model_spec.signature_name (empty: serving_default).")
    return self.signatures[name]

  def prepare(self, signature_name: str, aliases) -> "Request":
    """Resolves the signature a request names and checks its input aliases (every alias must be
    an input of the signature; TF Serving checks this before parsing the tensors)."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = self.signature(name)
    aliases = list(aliases)
    unknown = sorted(set(aliases) - set(signature.inputs))
    if unknown:
      raise SignatureError(
          "INVALID_ARGUMENT", f"input size does not match signature: {len(aliases)}!="
          f"{len(signature.inputs)} len({{{_names(aliases)}}}) != "
          f"len({{{_names(signature.inputs)}}}). Sent extra: {{{_names(unknown)}}}. Fix: send "
          f"only the signature's inputs ({_names(signature.inputs, quote=True)}), not "
          f"{_names(unknown, quote=True)}.")
    return Request(self, name, signature)

  def run(self, inputs: dict[str, np.ndarray], signature_name: str = "",
          output_filter: list[str] | None = None, run_options=None, run_metadata=None
          ) -> dict[str, np.ndarray]:
    """inputs {alias: array} -> outputs {alias: array}. Raises SignatureError."""
    return self.prepare(signature_name, inputs).run(inputs, output_filter, run_options,
                                                    run_metadata)

  def _session_run(self, fetches: list[str], feeds: dict, run_options, run_metadata) -> list:
    with self._idle:
      if self._closed:
        raise SignatureError("UNAVAILABLE", f"{self.export_dir} has been unloaded. Fix: retry; "
                             "requests without a version go to the newest loaded one.")
      self._active += 1
    try:
      return self.session.run(fetches, feeds, options=run_options, run_metadata=run_metadata)
    except tf.errors.OpError as e:
      raise SignatureError(code_name(e), first_line(e.message))
    finally:
      with self._idle:
        self._active -= 1
        self._idle.notify_all()

  def warm_up(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests (Predict requests) as TF Serving does on
    load; returns how many ran. A failing warm-up request fails the load."""
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415 (serving extra)
    path = os.path.join(self.export_dir, WARMUP_FILE)
    if not os.path.exists(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():  # DataLossError if cut
      log = prediction_log_pb2.PredictionLog.FromString(record)
      if not log.HasField("predict_log"):
        raise SignatureError("INVALID_ARGUMENT", f"{path}: unsupported warm-up log type.")
      request = log.predict_log.request
      inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
      self.run(inputs, request.model_spec.signature_name, list(request.output_filter) or None)
      count += 1
    if count == 0 and os.path.getsize(path):  # cut inside the first record's header
      raise SignatureError("DATA_LOSS", f"{path}: no complete record in {os.path.getsize(path)} "
                           "bytes (a truncated warm-up file).")
    return count

  def close(self, timeout: float = 60.0) -> None:
    """Refuses new runs, waits up to `timeout` s for those in flight, closes the Session."""
    with self._idle:
      if self._closed:
        return
      self._closed = True
      self._idle.wait_for(lambda: self._active == 0, timeout=timeout)
    self.session.close()


class Request:
  """One request to a signature whose aliases `SavedModelRunner.prepare` has checked."""

  def __init__(self, runner: SavedModelRunner, name: str, signature):
    self.runner, self.name, self.signature = runner, name, signature

  def dtype(self, alias: str) -> tf.dtypes.DType:
    """The dtype the signature declares for input `alias` (for parsers of JSON)."""
    return tf.dtypes.as_dtype(self.signature.inputs[alias].dtype)

  def run(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
          run_options=None, run_metadata=None) -> dict[str, np.ndarray]:
    """Checks each input's dtype, then each one's rank and batch, and the output filter; runs.
    Only the outputs asked for are fetched (as TF Serving)."""
    signature, defaults = self.signature, self.runner.defaults[self.name]
    values = {alias: np.asarray(value) for alias, value in inputs.items()}
    for alias, value in values.items():
      _check_dtype(alias, signature.inputs[alias], value)
    for alias, info in signature.inputs.items():
      if alias not in values and alias not in defaults:
        raise SignatureError(
            "INVALID_ARGUMENT", f"Signature input alias: {alias}(feed name: {info.name}) not "
            f"found in request and no default value provided. Inputs expected to be in the "
            f"request {{{_names(inputs)}}}, or default input alias set: "
            f"{_names(defaults)}. Fix: send input '{alias}'.")
      values.setdefault(alias, defaults.get(alias))
    for alias, info in signature.inputs.items():
      _check_shape(alias, info, values[alias], self.runner.max_batch)
    aliases = list(output_filter or signature.outputs.keys())
    for i, alias in enumerate(aliases):
      if alias not in signature.outputs:
        raise SignatureError("INVALID_ARGUMENT", f"output tensor alias not found in signature: "
                             f"{short(alias, quote=True)} Outputs expected to be in the set "
                             f"{{{_names(signature.outputs)}}}. Fix: filter on those, or send no "
                             "output_filter for all of them.")
      if alias in aliases[:i]:
        raise SignatureError("INVALID_ARGUMENT", f"duplicate output tensor alias: "
                             f"{short(alias, quote=True)}. Fix: name each output once in "
                             "output_filter.")
    every = sorted(aliases)  # sorted: the fetch order does not depend on the filter's
    feeds = {signature.inputs[alias].name: value for alias, value in values.items()}
    fetched = self.runner._session_run(  # noqa: SLF001
        [signature.outputs[a].name for a in every], feeds, run_options, run_metadata)
    fetched = dict(zip(every, fetched))
    return {alias: fetched[alias] for alias in aliases}


def _check_dtype(alias: str, info, value: np.ndarray) -> None:
  """The dtype must be the signature's exactly (Python's Session.run would convert it)."""
  expected = tf.dtypes.as_dtype(info.dtype)
  got = _dtype_of(value)
  if got != expected:
    got_name = got.name if got is not None else str(value.dtype)
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': expects {expected.name} but "
                         f"{got_name} is provided. Fix: send '{alias}' as {expected.name}.")


def _check_shape(alias: str, info, value: np.ndarray, max_batch: int | None) -> None:
  """The rank must match when the signature has one; a first dimension the signature leaves
  open (the batch) must be 1..max_batch."""
  dims = [d.size for d in info.tensor_shape.dim]
  if not info.tensor_shape.unknown_rank and value.ndim != len(dims):
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': expects rank {len(dims)} but a "
                         f"tensor of shape {list(value.shape)} is provided. Fix: send '{alias}' "
                         f"with shape {[d if d >= 0 else None for d in dims]}.")
  if dims and dims[0] < 0 and value.ndim and value.shape[0] == 0:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': shape {list(value.shape)} is an "
                         "empty batch (dimension 0 is 0), which the model cannot run. Fix: send "
                         "at least one row, or no request.")
  if dims and dims[0] < 0 and value.ndim and max_batch and value.shape[0] > max_batch:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': shape {list(value.shape)} has "
                         f"{value.shape[0]} rows, more than the {max_batch} this server runs in "
                         "one request. Fix: split the batch over several requests.")


def short(name: str, quote: bool = False, limit: int = 64) -> str:
  """A name from a request, cut to `limit` characters for an error message ('quoted')."""
  text = name if len(name) <= limit else name[:limit] + "..."
  return f"'{text}'" if quote else text


def _names(names, quote: bool = False) -> str:
  """Sorted names for a message, each cut short; at most 10."""
  names = sorted(names)
  shown = [short(n, quote) for n in names[:10]] + ([f"... {len(names) - 10} more"]
                                                   if len(names) > 10 else [])
  return ",".join(shown) if not quote else ", ".join(shown)


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


def code_name(error: tf.errors.OpError) -> str:
  """The status name of a TensorFlow error, e.g. "INVALID_ARGUMENT"."""
  return _CODE_NAMES.get(error.error_code, "UNKNOWN")


def first_line(message: str) -> str:
  """The error itself, without Python's "Graph execution error:" heading, the "Detected at node"
  stack and the "[[{{node ...}}]]" suffix that TF appends."""
  for paragraph in message.strip().split("\n\n"):
    paragraph = paragraph.strip()
    if not paragraph or paragraph == "Graph execution error:" or paragraph.startswith("Detected at"):
      continue
    lines = [line for line in paragraph.splitlines() if not line.strip().startswith("[[")]
    return " ".join(line.strip() for line in lines)
  return message.strip()
