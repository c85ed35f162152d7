"""The benchmarks' gRPC load: concurrent one-user Predict clients against a server, and a free
port for the server."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np


def load_test(address: str, raw: np.ndarray, signature: str, threshold: float | None,
              clients: int, seconds: float) -> dict:
  """`clients` threads sending one-user Predict calls for `seconds`."""
  import grpc  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415

  requests = []
  for row in raw:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "skiprec"
    request.model_spec.signature_name = signature
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(row[np.newaxis]))
    if threshold is not None:
      request.inputs["threshold"].CopyFrom(tf.make_tensor_proto(np.array([threshold], np.float32)))
    requests.append(request)
  latencies, errors, lock = [], [0], threading.Lock()
  stop = time.perf_counter() + seconds

  def client(seed: int):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    mine, failed, i = [], 0, seed
    while time.perf_counter() < stop:
      start = time.perf_counter()
      try:
        stub.Predict(requests[i % len(requests)], timeout=30)
        mine.append(time.perf_counter() - start)
      except grpc.RpcError:
        failed += 1
      i += clients
    with lock:
      latencies.extend(mine)
      errors[0] += failed

  threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
  began = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - began
  ms = np.array(latencies) * 1000
  result = {"signature": signature, "threshold": threshold, "clients": clients,
            "seconds": elapsed, "queries": len(latencies), "qps": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "errors": errors[0]}
  print(f"load {signature:<15} {result['qps']:7.1f} queries/s, p50 {result['p50_ms']:6.2f} ms, "
        f"p99 {result['p99_ms']:6.2f} ms, {result['errors']} errors "
        f"({result['queries']} queries, {clients} clients, {elapsed:.0f} s)", flush=True)
  return result


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
