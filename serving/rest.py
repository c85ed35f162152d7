"""TF Serving's REST API over the local ModelStores (https://www.tensorflow.org/tfx/serving/api_rest):

  POST /v1/models/<name>[/versions/<v>]:predict   {"signature_name": ..., "instances": [...]}
                                                  or {"inputs": {...}} (columnar)
  GET  /v1/models/<name>[/versions/<v>]           model status
  GET  /v1/models/<name>[/versions/<v>]/metadata  signature defs

Row format: each instance is a dict of named inputs (stacked along a new first dimension, so a
scalar per instance becomes a [B] input, as `k`, `threshold` and `max_blocks` are), or a plain
value for the signature's one required input. JSON values are converted to the dtype the
signature declares; a value of another type is INVALID_ARGUMENT (HTTP 400), an unknown model or
version NOT_FOUND (404).

Every malformed request gets a 4xx with {"error": ...} naming the field and the fix, never a 500
or a dropped connection: a body that is not JSON, nested deeper than MAX_DEPTH, with a bad or
negative Content-Length (400) or one over MAX_BODY bytes (413); bad base64 in {"b64": ...}, a
string that is not valid Unicode (a lone surrogate), a signature_name that is not a string. A
client that sends less than its Content-Length is dropped after TIMEOUT seconds.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import sys
import threading

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import grpc_service
from tf_skiprec.export.runner import SignatureError, short

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([0-9]+))?(:predict|/metadata)?$")
_HTTP = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
         "NOT_FOUND": 404, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503}
MAX_BODY = 64 << 20   # bytes of a request body
MAX_DEPTH = 32        # nesting of an input's lists (its rank)
TIMEOUT = 30.0        # seconds a connection may wait for the rest of a request
MAX_PARSING = 4       # request bodies parsed at once (each may take ~20x its size in memory)
_parsing = threading.BoundedSemaphore(MAX_PARSING)


def to_array(alias: str, value, dtype: tf.dtypes.DType) -> np.ndarray:
  """A JSON value (nested lists) -> an array of `dtype`; INVALID_ARGUMENT if it is not one."""
  _check_rectangular(alias, value)
  leaves = _leaves(value)
  if len(leaves) > grpc_service.MAX_ELEMENTS:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': {len(leaves)} values, more than "
                         f"the {grpc_service.MAX_ELEMENTS} one input may have. Fix: split the "
                         "request.")
  if dtype == tf.string:
    ok = all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in leaves)
  elif dtype.is_integer:
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in leaves)
  elif dtype.is_floating:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves)
  else:
    ok = dtype == tf.bool and all(isinstance(v, bool) for v in leaves)
  if not ok:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': JSON value is not of expected "
                         f"type: {dtype.name}. Fix: send {dtype.name} values" + (
                             ' (strings, or {"b64": base64} for bytes)'
                             if dtype == tf.string else "") + ".")
  if dtype == tf.string:
    value = _map_leaves(value, lambda v: _string(alias, v))
  try:
    with np.errstate(over="ignore"):  # a number beyond float32 is inf, as a cast makes it
      return np.array(value, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
  except (ValueError, OverflowError) as e:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': {short(str(e), limit=200)}. "
                         f"Fix: send values that fit {dtype.name}.")


def _string(alias: str, leaf) -> bytes:
  """A JSON string (UTF-8) or {"b64": base64} -> bytes; INVALID_ARGUMENT if it is neither."""
  if isinstance(leaf, dict):
    try:
      if not isinstance(leaf["b64"], str):
        raise TypeError("not a string")
      return base64.b64decode(leaf["b64"], validate=True)
    except (TypeError, ValueError) as e:
      raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': {{\"b64\": ...}} is not "
                           f"base64 ({e}). Fix: encode the bytes with standard base64.")
  try:
    return leaf.encode("utf-8")
  except UnicodeEncodeError:
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': a string is not valid Unicode (a "
                         "lone surrogate escape). Fix: send the bytes as {\"b64\": base64}.")


def predict_json(models: grpc_service.Models, name: str, version: str | None, body: dict) -> dict:
  """A REST predict body -> the response body."""
  store = models.store(name)
  with store.handle(_version(name, version)) as (number, runner):
    outputs, rows = _run_body(models, store, number, runner, body)
  if not rows:
    return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}
  count = len(next(iter(outputs.values()))) if outputs else 0
  if len(outputs) == 1:
    return {"predictions": next(iter(outputs.values()))}
  return {"predictions": [{alias: value[i] for alias, value in outputs.items()}
                          for i in range(count)]}


def _run_body(models: grpc_service.Models, store, number: int, runner, body: dict
              ) -> tuple[dict, bool]:
  """A predict body run on a held version -> ({alias: JSON value}, whether it was rows)."""
  signature_name = body.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise SignatureError("INVALID_ARGUMENT", "\"signature_name\" must be a string. Fix: name one "
                         f"of {', '.join(runner.servable())}, or leave it out for serving_default.")
  signature = runner.signature(signature_name)
  rows = "instances" in body
  if rows == ("inputs" in body):
    raise SignatureError("INVALID_ARGUMENT", "the body needs exactly one of \"instances\" (row "
                         "format) and \"inputs\" (columnar format). Fix: send "
                         '{"instances": [{"history": [...]}]} or {"inputs": {"history": [[...]]}}.')
  named = _named_inputs(body["instances"] if rows else body["inputs"], rows, signature)
  call = runner.prepare(signature_name, named)
  arrays = {alias: to_array(alias, value, call.dtype(alias)) for alias, value in named.items()}
  return {alias: _to_json(value)
          for alias, value in models.run(store, number, call, arrays).items()}, rows


def status_json(models: grpc_service.Models, name: str, version: str | None) -> dict:
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = name
  if version:
    request.model_spec.version.value = _version(name, version)
  response = grpc_service.model_status(models, request)
  return json_format.MessageToDict(response, preserving_proto_field_name=True)


def metadata_json(models: grpc_service.Models, name: str, version: str | None) -> dict:
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = name
  if version:
    request.model_spec.version.value = _version(name, version)
  response = grpc_service.metadata(models, request)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  return {"model_spec": json_format.MessageToDict(response.model_spec,
                                                  preserving_proto_field_name=True),
          "metadata": {"signature_def": json_format.MessageToDict(
              signatures, preserving_proto_field_name=True)}}


def serve(models: grpc_service.Models, host: str, port: int) -> http.server.ThreadingHTTPServer:
  """Starts the REST server in a daemon thread; returns it (`server_address` has the port)."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT  # on the socket: a client that stops sending is dropped, not waited for

    def do_GET(self):  # noqa: N802
      self._route(None)

    def do_POST(self):  # noqa: N802
      text = self.headers.get("Content-Length", "0")
      if not text.isascii() or not text.strip().isdigit():
        self.close_connection = True  # the body's end is unknown: nothing after it can be read
        return self._send(400, {"error": f"Content-Length {short(text, quote=True)} is not a "
                                "byte count. Fix: send the body's length in bytes."})
      if int(text) > MAX_BODY:
        self.close_connection = True
        return self._send(413, {"error": f"the body ({int(text)} bytes) is over the {MAX_BODY} "
                                "this server accepts. Fix: split the request."})
      with _parsing:  # bounds the memory that many large bodies at once would take
        try:
          body = json.loads(self.rfile.read(int(text)) or b"{}")
          if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        except (ValueError, RecursionError) as e:
          return self._send(400, {"error": f"JSON Parse error: {short(str(e), limit=200)}. Fix: "
                                  'send a JSON object, e.g. {"instances": [{"history": '
                                  '[...]}]}.'})
        self._route(body)

    def _route(self, body):
      match = _PATH.match(self.path.split("?")[0])
      if not match:
        return self._malformed()
      name, version, verb = match.groups()
      try:
        if body is not None and verb == ":predict":
          return self._send(200, predict_json(models, name, version, body))
        if body is None and verb == "/metadata":
          return self._send(200, metadata_json(models, name, version))
        if body is None and verb is None:
          return self._send(200, status_json(models, name, version))
        return self._malformed()
      except SignatureError as e:
        return self._send(_HTTP.get(e.code, 500), {"error": short(e.message, limit=2000)})
      except Exception as e:  # noqa: BLE001  (the server answers and keeps serving)
        logging.exception("REST %s failed", self.path)
        return self._send(500, {"error": f"{type(e).__name__}: {e}"})

    def _malformed(self):
      return self._send(404, {"error": f"Malformed request: {self.command} "
                              f"{short(self.path, limit=200)}. Fix: POST "
                              "/v1/models/<name>[/versions/<N>]:predict, or GET "
                              "/v1/models/<name>[/versions/<N>][/metadata]."})

    def _send(self, code: int, payload: dict):
      data = json.dumps(payload).encode("utf-8")
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):  # quiet: the gRPC side logs nothing per request either
      pass

  server = _Server((host, port), Handler)
  threading.Thread(target=server.serve_forever, name="rest", daemon=True).start()
  return server


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True

  def handle_error(self, request, client_address):
    """A client that went away or stalled past TIMEOUT is not logged as a server error."""
    if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
      logging.exception("REST connection from %s failed", client_address[0])


def _named_inputs(payload, rows: bool, signature) -> dict:
  """The request's {alias: JSON value}, from either format."""
  required = [a for a in signature.inputs if a not in signature.defaults]
  if rows:
    if not isinstance(payload, list):
      raise SignatureError("INVALID_ARGUMENT", "\"instances\" must be a list. Fix: send "
                           '{"instances": [{"history": [...]}, ...]}, one object per history.')
    if payload and all(isinstance(p, dict) for p in payload):
      keys = set(payload[0])
      if any(set(p) != keys for p in payload):
        raise SignatureError("INVALID_ARGUMENT", "every instance must name the same inputs. "
                             "Fix: give each of \"instances\" the same keys (or none of them "
                             "\"k\" / \"threshold\").")
      return {key: [p[key] for p in payload] for key in keys}
    if len(required) != 1:
      raise SignatureError("INVALID_ARGUMENT", f"instances without names need a signature with "
                           f"one required input; this one has {required}. Fix: send each "
                           "instance as an object of named inputs.")
    return {required[0]: payload}
  if isinstance(payload, dict):
    return payload
  if len(required) != 1:
    raise SignatureError("INVALID_ARGUMENT", f"unnamed \"inputs\" need a signature with one "
                         f"required input; this one has {required}. Fix: send \"inputs\" as an "
                         "object of named inputs.")
  return {required[0]: payload}


def _check_rectangular(alias: str, value) -> None:
  """Nested lists must have the same length at each depth (a tensor, not a ragged list), and be
  at most MAX_DEPTH deep."""
  level, depth = [value], 0
  while level and all(isinstance(v, list) for v in level):
    if len({len(v) for v in level}) > 1:
      raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': rows of different lengths; "
                           "a tensor needs every row the same length. Fix: pad the shorter rows "
                           "(histories with \"\", at the start).")
    depth += 1
    if depth > MAX_DEPTH:
      raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': lists nested more than "
                           f"{MAX_DEPTH} deep. Fix: send a tensor of the signature's rank.")
    level = [x for v in level for x in v]
  if any(isinstance(v, list) for v in level):
    raise SignatureError("INVALID_ARGUMENT", f"input '{alias}': mixes lists and values at one "
                         "depth. Fix: send a tensor, every row the same shape.")


def _leaves(value) -> list:
  """The values of nested lists (checked by _check_rectangular), in order."""
  while isinstance(value, list) and value and isinstance(value[0], list):
    value = [x for v in value for x in v]
  return value if isinstance(value, list) else [value]


def _map_leaves(value, fn):
  if isinstance(value, list):
    return [_map_leaves(v, fn) for v in value]
  return fn(value)


def _version(name: str, version: str | None) -> int | None:
  """The URL's version ([0-9]+); one beyond int64 is no version of the model (NOT_FOUND)."""
  if not version:
    return None
  if len(version) > 19 or int(version) >= 2**63:
    raise SignatureError("NOT_FOUND", f"Servable not found for request: Specific({short(name)}, "
                         f"{short(version)}). Fix: ask for a version the model has.")
  return int(version)


def _to_json(array: np.ndarray):
  if array.dtype == object:
    return _map_leaves(array.tolist(), lambda v: v.decode("utf-8", "replace")
                       if isinstance(v, bytes) else v)
  return array.tolist()
