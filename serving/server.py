"""A local PredictionService server (grpcio) that serves exported SavedModels as TF Serving does,
for development and for tests on machines without the tensorflow_model_server binary.

  python -m serving.server --model_name=skiprec --model_base_path=saved_models/skiprec
  python -m serving.server --model_config_file=serving/models.config      # several models
  make serve                                                              # the latest export

Flags follow tensorflow_model_server's (--port 8500 for gRPC, --rest_api_port 8501 for REST,
--file_system_poll_wait_seconds, --enable_batching with --batching_parameters_file: requests
merged as TF Serving merges them, serving/batching.py); --model_version_policy is "all" (every version under the base
path, the default here), "latest[:N]" or "specific:1,2". Signatures run by their SignatureDef in
a Session on the `serve` MetaGraph (tf_skiprec/export/runner.py), with TF Serving's status
codes; every error is answered and the server keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import json
import logging
import os
import signal
import threading

import grpc
from absl import app, flags
from google.protobuf import text_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import rest
from serving.batching import BatchScheduler
from serving.batching_parameters import BatchingConfigError, BatchingParameters, parse, read
from serving.grpc_service import ModelService, Models, PredictionService
from serving.model_store import ModelStore, VersionPolicy


class LocalServer:
  """gRPC (and optionally REST) over some ModelStores. Port 0 picks a free port."""

  def __init__(self, stores: dict[str, ModelStore], *, host: str = "127.0.0.1",
               port: int = 0, rest_api_port: int | None = None, workers: int = 16,
               batching: BatchingParameters | None = None):
    # With batching, each waiting request holds one of the `workers` gRPC threads, so at most
    # `workers` requests are merged at once.
    self.models = Models(stores, BatchScheduler(batching) if batching is not None else None)
    self.host = host
    self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(self.models), self._grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.models),
                                                              self._grpc)
    self.port = self._grpc.add_insecure_port(f"{host}:{port}")
    if not self.port:
      raise OSError(f"could not bind gRPC to {host}:{port}")
    self._rest_wanted = rest_api_port
    self._rest = None
    self.rest_api_port = None

  @property
  def address(self) -> str:
    return f"{self.host}:{self.port}"

  def start(self) -> "LocalServer":
    for store in self.models.stores.values():
      store.start()
    self._grpc.start()
    if self._rest_wanted is not None:
      self._rest = rest.serve(self.models, self.host, self._rest_wanted)
      self.rest_api_port = self._rest.server_address[1]
    return self

  def stop(self) -> None:
    self._grpc.stop(grace=2).wait()
    if self._rest is not None:
      self._rest.shutdown()
      self._rest.server_close()
    if self.models.batching is not None:
      self.models.batching.stop()
    for store in self.models.stores.values():
      store.stop()


def stores_from_config_file(path: str, poll_seconds: float) -> dict[str, ModelStore]:
  """A ModelServerConfig text file (TF Serving's --model_config_file) -> stores."""
  config = model_server_config_pb2.ModelServerConfig()
  try:
    with open(path) as f:
      text_format.Parse(f.read(), config)
  except (OSError, text_format.ParseError) as e:
    raise app.UsageError(f"--model_config_file={path}: {e}. Fix: a ModelServerConfig text "
                         "proto, as serving/models.config.")
  stores = {}
  base = os.path.dirname(os.path.abspath(path))
  for model in config.model_config_list.config:
    chosen = model.model_version_policy
    choice = chosen.WhichOneof("policy_choice")
    if choice == "specific":
      policy = VersionPolicy("specific", versions=tuple(chosen.specific.versions))
    elif choice == "all":
      policy = VersionPolicy("all")
    else:  # "latest", or none given: TF Serving's default, the latest version
      policy = VersionPolicy("latest", num_versions=chosen.latest.num_versions or 1)
    base_path = model.base_path if os.path.isabs(model.base_path) else os.path.join(
        base, model.base_path)
    stores[model.name] = ModelStore(model.name, base_path, policy, poll_seconds)
  return stores


FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 8500, "gRPC port.")
flags.DEFINE_integer("rest_api_port", 8501, "REST port (0 = no REST API).")
flags.DEFINE_string("host", "0.0.0.0", "Address to bind.")
flags.DEFINE_string("model_name", "skiprec", "Model name (with --model_base_path).")
flags.DEFINE_string("model_base_path", None, "Folder of integer version folders.")
flags.DEFINE_string("model_config_file", None, "A ModelServerConfig text file (several models).")
flags.DEFINE_string("model_version_policy", "all", "all, latest[:N] or specific:1,2.")
flags.DEFINE_bool("enable_batching", False, "TF Serving's server-side batching: concurrent "
                  "requests merged along dimension 0 (serving/batching.py).")
flags.DEFINE_string("batching_parameters_file", None, "A BatchingParameters text file (with "
                    "--enable_batching), e.g. serving/batching_parameters.txt; none: TF "
                    "Serving's defaults.")
flags.DEFINE_float("file_system_poll_wait_seconds", 1.0, "How often to look for new versions.")
flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0, "Threads per op; 0 = TensorFlow's "
                     "default (all cores). 1 serves small models fastest on few cores.")
flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0, "Ops (and requests) run at once; "
                     "0 = TensorFlow's default.")


def batching_parameters(enabled: bool, path: str | None) -> BatchingParameters | None:
  """--enable_batching and --batching_parameters_file -> the scheduler's parameters (None: off).
  As tensorflow_model_server: no file means TF Serving's defaults; a file without
  --enable_batching is an error."""
  if not enabled:
    if path:
      raise app.UsageError("--batching_parameters_file needs --enable_batching. Fix: add "
                           "--enable_batching, or drop the file.")
    return None
  try:
    params = read(path) if path else parse("", "TF Serving's default batching parameters")
  except BatchingConfigError as e:
    raise app.UsageError(str(e)) from None
  return params if path else dataclasses.replace(params,
                                                 thread_pool_name="model_server_batch_threads")


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  import tensorflow as tf  # noqa: PLC0415  (thread pools: before the first model loads)
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tensorflow_intra_op_parallelism)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tensorflow_inter_op_parallelism)
  gc.freeze()  # the modules' objects: never garbage, so left out of the collection each unload
               # makes (serving/model_store.py): ~10 ms instead of ~150 ms
  if FLAGS.model_config_file:
    stores = stores_from_config_file(FLAGS.model_config_file, FLAGS.file_system_poll_wait_seconds)
  elif FLAGS.model_base_path:
    try:
      policy = VersionPolicy.parse(FLAGS.model_version_policy)
    except ValueError as e:
      raise app.UsageError(f"--model_version_policy: {e}")
    stores = {FLAGS.model_name: ModelStore(FLAGS.model_name, FLAGS.model_base_path, policy,
                                           FLAGS.file_system_poll_wait_seconds)}
  else:
    raise app.UsageError("pass --model_base_path (with --model_name) or --model_config_file.")
  server = LocalServer(stores, host=FLAGS.host, port=FLAGS.port,
                       rest_api_port=FLAGS.rest_api_port or None,
                       batching=batching_parameters(FLAGS.enable_batching,
                                                    FLAGS.batching_parameters_file)).start()
  for name, store in stores.items():
    versions = [v.number for v in store.status()]
    logging.info("Model %s from %s: versions %s.", name, store.base_path, versions or "none yet")
  logging.info("Serving gRPC on %s%s.", server.address,
               f", REST on port {server.rest_api_port}" if server.rest_api_port else "")
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  signal.signal(signal.SIGINT, lambda *_: stop.set())
  stop.wait()
  server.stop()
  if server.models.batching is not None:
    stats = server.models.batching.stats
    logging.info("Batching stats: %s", json.dumps(
        {**stats, "batch_sizes": {str(n): c for n, c in sorted(stats["batch_sizes"].items())}}))


if __name__ == "__main__":
  app.run(main)
