"""The oracles of tests/test_serving_fuzz.py: from a Predict request (gRPC) or an HTTP request
(REST) alone, the status TF Serving's rules give it (with serving/grpc_service.py's stricter
parsing), the names one of which its error message must hold, and, if it is valid, the inputs the
in-memory model answers. Also the served model's signatures and inputs they check against.
"""

import base64
import json
import re

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2 as dt

from serving.grpc_service import MAX_ELEMENTS              # per input
from serving.model_store import MAX_BATCH

ITEMS = 40                            # the served model's catalogue
MAX_BYTES = 4 << 20                   # gRPC's receive limit
OUTPUTS = ("item_ids", "scores", "blocks_executed", "unknown_items", "history_length")
SIGNATURES = {"serving_default": (("history", "k", "threshold"), OUTPUTS),
              "full": (("history", "k"), OUTPUTS),
              "decisions": (("history", "threshold"),
                            ("keep", "keep_probability", "blocks_executed", "used_history"))}
INPUTS = {"history": (dt.DT_STRING, object, "string_val"), "k": (dt.DT_INT32, np.int32, "int_val"),
          "threshold": (dt.DT_FLOAT, np.float32, "float_val")}  # dtype, numpy's, values field


def _named(aliases) -> list:
  return [n for a in aliases for n in (f"'{a[:64]}", f"[{a} must")]  # runner's / graph's words


def array_errors(arrays: dict) -> list:
  """Inputs the runner refuses (missing, rank, rows), else the graph (1 or B values, k 1..40)."""
  bad = ["history"] if "history" not in arrays else [a for a, v in arrays.items() if v.ndim != 1 + (
      a == "history") or not 0 < v.shape[0] <= MAX_BATCH]
  if bad:
    return bad
  rows, k = len(arrays["history"]), arrays.get("k", np.int32([1]))
  bad = [a for a in ("k", "threshold") if a in arrays and arrays[a].size not in (1, rows)]
  return bad + (["k"] if np.any((k < 1) | (k > ITEMS)) else [])


def _parses(alias: str, proto) -> bool:
  """The input's dtype, a rank, dimensions >= 0, <= MAX_ELEMENTS, one value each or one for all."""
  dims = [d.size for d in proto.tensor_shape.dim]
  if proto.dtype != INPUTS[alias][0] or proto.tensor_shape.unknown_rank or min(dims + [0]) < 0:
    return False
  elements = int(np.prod(dims, dtype=object)) if dims else 1
  if elements > MAX_ELEMENTS or proto.tensor_content:  # content: 4 bytes an element, no strings
    return elements <= MAX_ELEMENTS and alias != "history" and len(
        proto.tensor_content) == 4 * elements
  count = len(getattr(proto, INPUTS[alias][2]))
  return count == elements or (count == 1 and 1 < elements <= MAX_BATCH and alias != "history")


def grpc_oracle(request):
  """(the status, names one of which its message holds, the inputs if valid)."""
  spec, which = request.model_spec, request.model_spec.WhichOneof("version_choice")
  name = spec.signature_name or "serving_default"
  if request.ByteSize() > MAX_BYTES:
    return "RESOURCE_EXHAUSTED", None, None          # gRPC's own limit and message
  if spec.name != "skiprec" or (which == "version" and spec.version.value != 1):
    return "NOT_FOUND", [f"Latest({spec.name[:64]}", f"skiprec, {spec.version.value})"], None
  if which == "version_label" and spec.version_label:
    return "INVALID_ARGUMENT", [f"'{spec.version_label[:64]}"], None
  if name not in SIGNATURES:
    return "FAILED_PRECONDITION", [f'"{name[:64]}'], None
  bad = sorted(set(request.inputs) - set(SIGNATURES[name][0]))[:10] or [
      a for a, p in request.inputs.items() if not _parses(a, p)]
  arrays = {} if bad else {a: tf.make_ndarray(p) for a, p in request.inputs.items()}
  wanted = list(request.output_filter)
  bad = bad or array_errors(arrays) or [a for i, a in enumerate(wanted)
                                        if a not in SIGNATURES[name][1] or a in wanted[:i]]
  return ("INVALID_ARGUMENT", _named(bad), None) if bad else ("OK", None, arrays)


def json_array(value, alias: str) -> np.ndarray | None:
  """JSON -> the input's array, or None: a rectangle <= 32 deep of strings / {"b64"}, ints, nums."""
  shape, level = [], [value]
  while level and all(isinstance(v, list) for v in level):
    if len({len(v) for v in level}) > 1 or len(shape) == 32:
      return None
    shape.append(len(level[0]))
    level = [x for v in level for x in v]
  if any(isinstance(v, (list, bool)) for v in level):
    return None
  try:
    if alias == "history":
      values = [base64.b64decode(v["b64"], validate=True) if isinstance(v, dict) and
                list(v) == ["b64"] and isinstance(v["b64"], str) else v.encode() for v in level]
    elif alias == "k":
      values = [v if isinstance(v, int) and -2**31 <= v < 2**31 else None for v in level]
    else:
      values = [float(v) if isinstance(v, (int, float)) else None for v in level]
  except (AttributeError, ValueError, OverflowError):  # not a string, bad base64, 10**400
    return None
  with np.errstate(over="ignore"):
    return None if None in values else np.array(values, INPUTS[alias][1]).reshape(shape)


def rest_oracle(path: str, raw: bytes, length: str | None):
  """((the HTTP status, names one of which its error holds), the signature, the inputs)."""
  if length is not None:
    return ((400, ["Content-Length"]) if not length.isdigit() else (413, ["bytes"])), None, None
  try:
    body = json.loads(raw or b"{}")
  except (ValueError, RecursionError):
    body = None
  match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/([0-9]+))?:predict", path)
  if not isinstance(body, dict) or not match:
    return (400, ["JSON"]) if not isinstance(body, dict) else (404, ["Malformed"]), None, None
  if match.group(1) != "skiprec" or match.group(2) not in (None, "1"):
    return (404, ["Servable not found"]), None, None
  name = body.get("signature_name", "")
  if not isinstance(name, str) or (name or "serving_default") not in SIGNATURES:
    return (400, ["signature_name", f'"{name}'[:65]]), None, None
  payload, name = body.get("instances", body.get("inputs")), name or "serving_default"
  rows = "instances" in body and isinstance(payload, list)
  dicts = rows and payload and all(isinstance(p, dict) for p in payload)  # named instances
  if ("instances" in body) == ("inputs" in body) or ("instances" in body and not rows) or (
      dicts and any(p.keys() != payload[0].keys() for p in payload)):
    return (400, ["instance"]), None, None
  named = ({key: [p[key] for p in payload] for key in payload[0]} if dicts else
           payload if isinstance(payload, dict) and not rows else {"history": payload})
  bad = sorted(set(named) - set(SIGNATURES[name][0]))[:10]
  arrays = {} if bad else {a: json_array(v, a) for a, v in named.items()}
  bad = bad or [a for a, v in arrays.items() if v is None] or array_errors(arrays)
  return ((400, _named(bad)) if bad else (200, None)), name, arrays
