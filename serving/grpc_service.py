"""TF Serving's gRPC API over the local ModelStores: PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus), with TF Serving's status codes.

Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED (the
generated base classes do that).
"""

from __future__ import annotations

import logging

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.model_store import AVAILABLE, END, LOADING, UNLOADING, ModelStore
from tf_skiprec.savedmodel_runner import SignatureError

_STATES = {LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
           AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
           UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
           END: get_model_status_pb2.ModelVersionStatus.END}


class Models:
  """The served models by name; `lookup(spec)` resolves a ModelSpec to (store, version)."""

  def __init__(self, stores: dict[str, ModelStore]):
    self.stores = stores

  def store(self, name: str) -> ModelStore:
    if name not in self.stores:
      raise SignatureError("NOT_FOUND", f"Servable not found for request: Latest({name})")
    return self.stores[name]

  def version_of(self, spec) -> int | None:
    """The version a ModelSpec asks for: its version, or None (latest). Labels are refused."""
    if spec.HasField("version"):
      return spec.version.value
    if spec.version_label:
      raise SignatureError("INVALID_ARGUMENT",
                           f"version label {spec.version_label!r}: labels are not configured "
                           "on this server. Fix: ask for a version number or the latest.")
    return None


def predict(models: Models, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
  """One Predict call; raises SignatureError with TF Serving's status code."""
  store = models.store(request.model_spec.name)
  version, runner = store.runner(models.version_of(request.model_spec))
  inputs = {}
  for alias, proto in request.inputs.items():
    try:
      inputs[alias] = tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001  (any malformed TensorProto)
      raise SignatureError("INVALID_ARGUMENT", f"tensor parsing error: {alias}")
  signature = request.model_spec.signature_name or "serving_default"
  outputs = runner.run(inputs, signature, list(request.output_filter) or None)
  response = predict_pb2.PredictResponse()
  response.model_spec.name = store.name
  response.model_spec.version.value = version
  response.model_spec.signature_name = signature
  for alias, value in outputs.items():
    response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
  return response


def metadata(models: Models, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """GetModelMetadata: the "signature_def" field, as TF Serving serves it."""
  for field in request.metadata_field:
    if field != "signature_def":
      raise SignatureError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
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
      entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
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
    context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN), e.message)
  except Exception as e:  # noqa: BLE001  (the server answers and keeps serving)
    logging.exception("%s failed", handler.__name__)
    context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
