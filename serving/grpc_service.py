"""TF Serving's gRPC API over the local ModelStores: PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus), with TF Serving's status codes.

Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED (the
generated base classes do that).

Predict checks in TF Serving's order (predict_util.cc): the model and version (NOT_FOUND), the
signature and the input aliases (the runner's `prepare`: FAILED_PRECONDITION, INVALID_ARGUMENT),
then each TensorProto (INVALID_ARGUMENT, "tensor parsing error", as the dtype it declares), then
the runner's checks (Request.run: every tensor's dtype against the signature's, then the inputs
left out without a default, then every rank and batch, then the output filter) and the graph.
A request is validated once: this module parses, the runner checks.
TensorProtos are parsed more strictly than TensorFlow's Tensor::FromProto, which repeats the last
value when there are too few and ignores the extra ones: a request must carry one value per
element (or, for a numeric input of at most MAX_BATCH elements, one value for all of them, the
compact form tf.make_tensor_proto writes), non-negative dimensions, and at most MAX_ELEMENTS
elements per input, so a tensor_shape cannot make the server allocate much more than the request
carries. Error messages are cut to MAX_MESSAGE characters (a longer grpc-message trailer would
reach the client as a transport error, not as the status).
"""

from __future__ import annotations

import logging

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.batching import BatchScheduler
from serving.model_store import AVAILABLE, END, LOADING, MAX_BATCH, UNLOADING, ModelStore
from tf_skiprec.export.runner import SignatureError, short

MAX_ELEMENTS = 1 << 22  # per input: what a 4 MiB message (gRPC's default limit) holds at 1 B each
MAX_MESSAGE = 2000      # characters of an error message

_STATES = {LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
           AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
           UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
           END: get_model_status_pb2.ModelVersionStatus.END}


class Models:
  """The served models by name; `lookup(spec)` resolves a ModelSpec to (store, version). With a
  BatchScheduler (--enable_batching), `run` merges concurrent requests as TF Serving does."""

  def __init__(self, stores: dict[str, ModelStore], batching: BatchScheduler | None = None):
    self.stores = stores
    self.batching = batching

  def run(self, store: ModelStore, version: int, call, inputs: dict[str, np.ndarray],
          output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
    """Runs a prepared call (tf_skiprec/export/runner.py's Request) alone, or with batching in
    one batch with the concurrent requests of the same model, version, signature, input aliases
    and output filter (serving/batching.py: TF Serving queues by the input and output tensors)."""
    if self.batching is None:
      return call.run(inputs, output_filter)
    key = (store.name, version, call.name, tuple(sorted(inputs)), tuple(output_filter or ()))
    return self.batching.submit(key, lambda merged: call.run(merged, output_filter), inputs)

  def store(self, name: str) -> ModelStore:
    if name not in self.stores:
      raise SignatureError("NOT_FOUND", f"Servable not found for request: Latest({short(name)}). "
                           f"Fix: set model_spec.name to a served model "
                           f"({', '.join(sorted(self.stores))}).")
    return self.stores[name]

  def version_of(self, spec) -> int | None:
    """The version a ModelSpec asks for: its version, or None (latest). Labels are refused."""
    if spec.HasField("version"):
      return spec.version.value
    if spec.version_label:
      raise SignatureError("INVALID_ARGUMENT",
                           f"version label {short(spec.version_label, quote=True)}: labels are "
                           "not configured on this server. Fix: ask for a version number or the "
                           "latest (no version).")
    return None


def predict(models: Models, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
  """One Predict call; raises SignatureError with TF Serving's status code."""
  store = models.store(request.model_spec.name)
  with store.handle(models.version_of(request.model_spec)) as (version, runner):
    call = runner.prepare(request.model_spec.signature_name, request.inputs)
    inputs = {alias: parse_tensor(alias, proto) for alias, proto in request.inputs.items()}
    outputs = models.run(store, version, call, inputs, list(request.output_filter) or None)
  response = predict_pb2.PredictResponse()
  response.model_spec.name = store.name
  response.model_spec.version.value = version
  response.model_spec.signature_name = call.name
  for alias, value in outputs.items():
    response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
  return response


def parse_tensor(alias: str, proto) -> np.ndarray:
  """A request's TensorProto -> an array of the dtype it declares, checked before anything is
  allocated: a known dtype and rank, dimensions >= 0, at most MAX_ELEMENTS elements, and one
  value per element (or one for all: numbers only, at most MAX_BATCH of them); a dtype with no
  value field (quantized, float8, ...) only in tensor_content, of its exact size.
  INVALID_ARGUMENT naming the input otherwise. Whether the dtype is the signature's is the
  runner's check (tf_skiprec/export/runner.py, Request.run), the one place it is made."""
  try:
    dtype = tf.dtypes.as_dtype(proto.dtype)
  except TypeError:
    dtype = None
  shape = [d.size for d in proto.tensor_shape.dim]
  fix = (f"Fix: send '{alias}' as tf.make_tensor_proto(array) does: its shape, and its values "
         "in row-major order")

  def refuse(problem: str):
    raise SignatureError("INVALID_ARGUMENT", f"tensor parsing error: input '{alias}': "
                         f"{problem}. {fix}.")

  if dtype is None or dtype.base_dtype != dtype or dtype in (tf.resource, tf.variant):
    refuse(f"DataType {proto.dtype} is not a tensor's value type")
  if proto.tensor_shape.unknown_rank:
    refuse("tensor_shape has unknown_rank set; a tensor needs its dimensions")
  if any(size < 0 for size in shape):
    refuse(f"tensor_shape {shape[:8]} has a negative dimension")
  elements = 1
  for size in shape:
    elements *= size                    # Python ints: no overflow
  if elements > MAX_ELEMENTS:
    refuse(f"tensor_shape {shape[:8]} declares {elements} elements, more than the "
           f"{MAX_ELEMENTS} one input may have; split the request")
  field, per_value = _VALUE_FIELDS.get(dtype, (None, 1))
  if proto.tensor_content:
    if dtype == tf.string or len(proto.tensor_content) != elements * dtype.size:
      refuse(f"tensor_content has {len(proto.tensor_content)} bytes, tensor_shape {shape[:8]} "
             f"needs {elements} {dtype.name} values" + (
                 " (a string tensor uses string_val)" if dtype == tf.string else ""))
  elif field is None:
    if elements:  # no value field to count: what it would build is unbounded by the request
      refuse(f"{dtype.name} values can come only in tensor_content")
  else:
    count = len(getattr(proto, field)) // per_value
    # One value for all: a numeric vector such as k or threshold, never more than a batch (one
    # short message must not make the server build a large tensor, least of all of strings).
    broadcast = count == 1 and 1 < elements <= MAX_BATCH and dtype != tf.string
    if count != elements and not broadcast:
      refuse(f"tensor_shape {shape[:8]} declares {elements} elements but {field} holds {count} "
             f"values (one per element; one for all only for numbers, at most {MAX_BATCH})")
  try:
    return tf.make_ndarray(proto)
  except Exception as e:  # noqa: BLE001  (any other malformed TensorProto)
    refuse(f"{type(e).__name__}: {short(str(e), limit=200)}")


_VALUE_FIELDS = {tf.string: ("string_val", 1), tf.float16: ("half_val", 1),
                 tf.bfloat16: ("half_val", 1), tf.float32: ("float_val", 1),
                 tf.float64: ("double_val", 1), tf.int64: ("int64_val", 1),
                 tf.uint32: ("uint32_val", 1), tf.uint64: ("uint64_val", 1),
                 tf.complex64: ("scomplex_val", 2), tf.complex128: ("dcomplex_val", 2),
                 tf.bool: ("bool_val", 1),
                 **{t: ("int_val", 1) for t in (tf.int32, tf.int16, tf.int8, tf.uint8, tf.uint16)}}


def metadata(models: Models, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """GetModelMetadata: the "signature_def" field, as TF Serving serves it."""
  for field in request.metadata_field:
    if field != "signature_def":
      raise SignatureError("INVALID_ARGUMENT", f"Metadata field {short(field)} is not supported. "
                           "Fix: ask for metadata_field \"signature_def\".")
  if not request.metadata_field:
    raise SignatureError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one "
                         "metadata_field")
  store = models.store(request.model_spec.name)
  version, runner = store.runner(models.version_of(request.model_spec))
  signatures = get_model_metadata_pb2.SignatureDefMap()
  for name, signature in runner.signatures.items():
    if not name.startswith("__"):
      signatures.signature_def[name].CopyFrom(signature)
  packed = any_pb2.Any()
  packed.Pack(signatures)
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.name = store.name
  response.model_spec.version.value = version
  response.metadata["signature_def"].CopyFrom(packed)
  return response


def model_status(models: Models, request) -> get_model_status_pb2.GetModelStatusResponse:
  store = models.store(request.model_spec.name)
  wanted = models.version_of(request.model_spec)
  versions = store.status(wanted)
  if not versions:
    which = f"version {wanted}" if wanted is not None else "any versions"
    raise SignatureError("NOT_FOUND", f"Could not find {which} of model {store.name}")
  response = get_model_status_pb2.GetModelStatusResponse()
  for v in versions:
    entry = response.model_version_status.add()
    entry.version = v.number
    entry.state = _STATES[v.state]
    if v.error:
      entry.status.error_code = getattr(grpc.StatusCode, v.error_code or "UNKNOWN",
                                        grpc.StatusCode.UNKNOWN).value[0]
      entry.status.error_message = v.error
  return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, models: Models):
    self.models = models

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    return _answer(context, predict, self.models, request)

  def GetModelMetadata(self, request, context):  # noqa: N802
    return _answer(context, metadata, self.models, request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, models: Models):
    self.models = models

  def GetModelStatus(self, request, context):  # noqa: N802
    return _answer(context, model_status, self.models, request)


def _answer(context, handler, models: Models, request):
  """Runs a handler; a SignatureError becomes its status, anything else INTERNAL (logged)."""
  try:
    return handler(models, request)
  except SignatureError as e:
    context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN),
                  short(e.message, limit=MAX_MESSAGE))
  except Exception as e:  # noqa: BLE001  (the server answers and keeps serving)
    logging.exception("%s failed", handler.__name__)
    context.abort(grpc.StatusCode.INTERNAL, short(f"{type(e).__name__}: {e}", limit=MAX_MESSAGE))
