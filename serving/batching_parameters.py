"""TF Serving's --batching_parameters_file, read as tensorflow_model_server reads it.

The file is a BatchingParameters text proto (tensorflow_serving/servables/tensorflow/
session_bundle_config.proto). tensorflow-serving-api does not ship that proto, so `_MESSAGE` is
its schema rebuilt here (names, numbers and types) in a private descriptor pool, and protobuf's
own text-format parser reads the file: comments, `{ value: N }` wrappers, repeated fields and its
line:column errors behave as in TF Serving. Fields absent from the file take TF Serving's
defaults (bundle_factory_util.h, GetQueueOptions; SharedBatchScheduler's options), and the file
gets TF Serving's checks (WrapSessionForBatching, AddQueue), with its messages:

  max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10 (0 becomes 1),
  num_batch_threads = the CPUs, allowed_batch_sizes none, pad_variable_length_inputs false,
  enable_large_batch_splitting false.

  params = read("serving/batching_parameters.txt")       # BatchingParameters; BatchingConfigError

The local server does not split large batches: a file that turns enable_large_batch_splitting on
is refused with the fix, not served differently from TF Serving.
"""

from __future__ import annotations

import dataclasses
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2


class BatchingConfigError(ValueError):
  """A batching parameters file that TF Serving would refuse (or the local server cannot serve);
  the message names the file and the field, or the line and column."""


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """What the batching scheduler uses; each default is TF Serving's for an absent field."""
  max_batch_size: int = 1000            # the largest batch, and the largest request
  batch_timeout_micros: int = 0         # how long the open batch waits for more requests
  max_enqueued_batches: int = 10        # batches queued (the open one included) before UNAVAILABLE
  num_batch_threads: int = os.cpu_count() or 1   # batches run at once
  allowed_batch_sizes: tuple[int, ...] = ()      # a batch is padded up to the next of these
  pad_variable_length_inputs: bool = False       # pad unequal non-batch dimensions (at the end)
  thread_pool_name: str = "batch_threads"


# session_bundle_config.proto's BatchingParameters: (name, number, type, label, wrapper).
_INT64, _BOOL, _STRING = (descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                          descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                          descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
_MESSAGE_TYPE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_FIELDS = (
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("thread_pool_name", 3, "StringValue"),
    ("num_batch_threads", 4, "Int64Value"),
    ("max_enqueued_batches", 5, "Int64Value"),
    ("allowed_batch_sizes", 6, _INT64),
    ("pad_variable_length_inputs", 7, _BOOL),
    ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
)


def _message_class():
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  proto = descriptor_pb2.FileDescriptorProto(
      name="tf_skiprec_batching_parameters.proto", package="tensorflow.serving",
      syntax="proto3", dependency=[wrappers_pb2.DESCRIPTOR.name])
  message = proto.message_type.add(name="BatchingParameters")
  for name, number, kind in _FIELDS:
    field = message.field.add(name=name, number=number)
    if isinstance(kind, str):
      field.type, field.label = _MESSAGE_TYPE, _OPTIONAL
      field.type_name = f".google.protobuf.{kind}"
    else:
      field.type = kind
      field.label = _REPEATED if name == "allowed_batch_sizes" else _OPTIONAL
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


_MESSAGE = _message_class()


def parse(text: str, where: str = "batching parameters") -> BatchingParameters:
  """A BatchingParameters text proto -> BatchingParameters, TF Serving's defaults filled in and
  its checks applied. Raises BatchingConfigError naming `where`."""
  proto = _MESSAGE()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise BatchingConfigError(f"{where}: {str(e).rstrip('.')}. Fix: a BatchingParameters text "
                              "proto, e.g. "
                              "`max_batch_size { value: 64 }` (serving/batching_parameters.txt)."
                              ) from None
  values = {name: getattr(proto, name).value for name, _, kind in _FIELDS
            if isinstance(kind, str) and proto.HasField(name)}
  if values.pop("enable_large_batch_splitting", False):
    raise BatchingConfigError(
        f"{where}: enable_large_batch_splitting is on; the local server does not split batches. "
        "Fix: remove it (TF Serving's default is off), or serve with tensorflow_model_server.")
  values.pop("max_execution_batch_size", None)  # used by TF Serving only when splitting
  params = BatchingParameters(**values, allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
                              pad_variable_length_inputs=proto.pad_variable_length_inputs)
  problem = _problem(params)
  if problem:
    raise BatchingConfigError(f"{where}: {problem}")
  if params.max_enqueued_batches == 0:  # TF Serving's AddQueue: 0 means 1 without splitting
    params = dataclasses.replace(params, max_enqueued_batches=1)
  return params


def read(path: str) -> BatchingParameters:
  """parse() of the file at `path`; BatchingConfigError names the file if it cannot be read."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise BatchingConfigError(f"--batching_parameters_file={path}: cannot read it ({e}). Fix: "
                              "the path of a BatchingParameters text file, e.g. "
                              "serving/batching_parameters.txt.") from None
  return parse(text, path)


def _problem(p: BatchingParameters) -> str | None:
  """TF Serving's checks, in its order, with its messages (and the fix)."""
  if p.allowed_batch_sizes and p.allowed_batch_sizes[-1] != p.max_batch_size:
    return (f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{p.allowed_batch_sizes[-1]}; expected {p.max_batch_size}. Fix: end "
            "allowed_batch_sizes with max_batch_size.")
  if any(b <= 0 for b in p.allowed_batch_sizes) or list(p.allowed_batch_sizes) != sorted(
      set(p.allowed_batch_sizes)):
    # TF Serving's model server does not check this (its proto asks for it); a batch would be
    # padded to the first allowed size above it, so a size out of order is never used.
    return (f"allowed_batch_sizes {list(p.allowed_batch_sizes)} must be positive and strictly "
            "increasing. Fix: list them in increasing order.")
  if p.num_batch_threads <= 0:
    return (f"num_batch_threads must be positive; was {p.num_batch_threads}. Fix: "
            "num_batch_threads { value: 4 }.")
  if p.max_batch_size <= 0:
    return (f"max_batch_size must be positive; was {p.max_batch_size}. Fix: "
            "max_batch_size { value: 64 }.")
  if p.batch_timeout_micros < 0:
    return (f"batch_timeout_micros must be non-negative; was {p.batch_timeout_micros}. Fix: "
            "batch_timeout_micros { value: 2000 }.")
  if p.max_enqueued_batches < 0:
    return (f"max_enqueued_batches must be non-negative; was {p.max_enqueued_batches}. Fix: "
            "max_enqueued_batches { value: 100 }.")
  return None
