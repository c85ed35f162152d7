"""A soak test of the serving set-up under version swaps: a PredictionService server with
server-side batching answers clients without pause while a new version is exported and published
every `swap_seconds`, and its version policy retires the old ones. Every answer is checked
against the version it names; the server's RSS and its versions' states are sampled.

  report = run_soak(SoakSpec(seconds=600, swap_seconds=30), workdir)   # bench/serving_soak.py
  report["errors"], report["wrong_answers"], report["rss_mb"]["drift"]

In bench/, not serving/: it builds and exports models, which the server must not need. What
runs, each in its own process, so that the server's RSS is its own:
- the server: `python -m serving.server` with a ModelServerConfig like serving/models.config
  but serving the newest `num_versions` (1 by default: the version retired is the one every
  request was going to a moment before, so requests are on it when it goes), --enable_batching
  and serving/batching_parameters.txt;
- the publisher (bench/soak_versions.py), which exports a version every `swap_seconds` with
  every request's answer alone;
- the clients (this process, `clients` threads): each sends the pool's Predict requests in turn
  (serving_default with its own k and threshold, and `full`), as serving.client sends them: the
  history left-padded to the full window, k and threshold one value per row.

An answer is wrong when the version it names was never published, or when its top-k differs from
that version's answer alone: item ids (two ids may trade places only when their scores tie
within ATOL), scores within ATOL, and blocks executed. Every failed call is an error, by status
code, and so is any other failure in a client (an answer that cannot be read is a wrong one);
`clients_ok` counts the clients that ran to the end. The clients run `seconds`, and on until the
last version published has answered (loading and warming it up takes 10 to 25 s under the load
here, and more on a slower day; at most DRAIN_SECONDS or two swap periods more, the longer).

The report, and how its RSS drift is measured: bench/soak_report.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

import soak_report  # noqa: E402  (bench/)
from soak_versions import (MODEL, REPO, SoakSpec, _folders, answer,  # noqa: F401  (bench/)
                           request_pool)

ATOL = 1e-5                    # scores of one version: batched (gather/scatter) against alone
DRAIN_SECONDS = 60.0           # the most the clients go on past `seconds` for the last version;
                               # on a slow day it answered 25.6 s after its publishing (soak test)


def differences(got: dict, expected: dict) -> str:
  """"" when `got` is `expected` (ids, scores within ATOL, blocks); else what differs."""
  if got["blocks"] != expected["blocks"]:
    return f"blocks executed {got['blocks']} != {expected['blocks']}"
  if len(got["ids"]) != len(expected["ids"]):
    return f"{len(got['ids'])} items != {len(expected['ids'])}"
  if not np.allclose(got["scores"], expected["scores"], rtol=0, atol=ATOL):
    return f"scores {got['scores']} != {expected['scores']}"
  for pos, (item, wanted) in enumerate(zip(got["ids"], expected["ids"])):
    if item != wanted and not any(
        other == item and abs(expected["scores"][j] - expected["scores"][pos]) <= ATOL
        for j, other in enumerate(expected["ids"])):
      return f"item {pos}: {item!r} != {wanted!r} (scores {expected['scores']})"
  return ""


# ---- the soak -------------------------------------------------------------------------------

def run_soak(spec: SoakSpec, workdir: str, progress=print) -> dict:
  """Runs one soak in `workdir` (created; it holds the versions, answers and server log) and
  returns its report (the module docstring says what is counted)."""
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415

  from serving.client import wait_until_available  # noqa: PLC0415

  base_path, expected_dir, staging = _folders(workdir)
  for folder in (base_path, expected_dir, staging):
    os.makedirs(folder, exist_ok=True)
  with open(os.path.join(workdir, "spec.json"), "w") as f:
    json.dump(dataclasses.asdict(spec), f)
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  with open(os.path.join(workdir, "publisher.log"), "w") as log:
    publisher = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "bench", "soak_versions.py"), workdir], cwd=REPO,
        env=env, stdout=log, stderr=subprocess.STDOUT)
  progress("publishing version 1 ...")
  server, address = _start_server(spec, workdir, base_path)
  stop, threads = None, []
  try:
    wait_until_available(address, MODEL, timeout=300, watch={
        "the soak's publisher (publisher.log in the soak's folder)": publisher,
        "the soak's server (server.log in the soak's folder)": server})
    pool = request_pool(spec)
    requests = []
    for r in pool:
      request = predict_pb2.PredictRequest()
      request.model_spec.name = MODEL
      request.model_spec.signature_name = r["signature"]
      for alias, value in r["inputs"].items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
      requests.append((request, int(r["inputs"]["k"][0])))
    checker = _Checker(expected_dir)
    samples = _Sampler(server.pid, address)
    samples.start()
    began = time.time()
    with open(os.path.join(workdir, "started.tmp"), "w") as f:
      f.write(repr(began))
    os.replace(os.path.join(workdir, "started.tmp"), os.path.join(workdir, "started"))
    stop_at = began + spec.seconds
    stop = threading.Event()
    progress(f"soak: {spec.clients} clients for {spec.seconds:.0f} s, a version every "
             f"{spec.swap_seconds:.0f} s ({spec.swaps} swaps)")
    threads = [threading.Thread(target=_client, name=f"soak-client-{c}", daemon=True,
                                args=(address, requests, c, spec, stop, checker))
               for c in range(spec.clients)]
    for t in threads:
      t.start()
    every = max(10.0, spec.seconds / 20)
    last_line = began
    while not stop.wait(0.5):
      now = time.time()
      if now - last_line >= every and now < stop_at:
        progress(checker.line(now - began))
        last_line = now
      if now >= stop_at and _drained(spec, workdir, checker, now - stop_at):
        stop.set()
    for t in threads:
      t.join()
    elapsed = time.time() - began
    samples.stop()
    try:
      publisher_ok = publisher.wait(timeout=spec.swap_seconds + 120) == 0
    except subprocess.TimeoutExpired:
      publisher_ok = False
  finally:
    if stop is not None:          # on any error too: no client is left calling a dead server
      stop.set()
      for t in threads:
        t.join(timeout=spec.timeout + 5)
    if publisher.poll() is None:
      publisher.kill()
      publisher.wait()
    batching = _stop_server(server, os.path.join(workdir, "server.log"))
  published = _read_jsonl(os.path.join(workdir, "published.jsonl"))
  return soak_report.report(spec, checker, samples, published, publisher_ok, batching, elapsed)


class _Checker:
  """Counts answers, errors (by code) and wrong answers; thread-safe."""

  def __init__(self, expected_dir: str):
    self.expected_dir = expected_dir
    self._expected: dict[int, list | None] = {}
    self._lock = threading.Lock()
    self.answers = 0
    self.latencies: list[float] = []
    self.errors: dict[str, int] = {}
    self.error_examples: list[str] = []
    self.wrong = 0
    self.wrong_examples: list[str] = []
    self.by_version: dict[int, int] = {}
    self.first_answer: dict[int, float] = {}
    self.clients_ok = 0

  def client_done(self) -> None:
    with self._lock:
      self.clients_ok += 1

  def expected(self, version: int) -> list | None:
    with self._lock:
      if version not in self._expected:
        path = os.path.join(self.expected_dir, f"{version}.json")
        self._expected[version] = None
        if os.path.exists(path):
          with open(path) as f:
            self._expected[version] = json.load(f)
      return self._expected[version]

  def record(self, index: int, version: int, got: dict | None, seconds: float,
             problem: str = "") -> None:
    """One answer: `got` checked against `version`'s answer alone (or `problem` already
    found)."""
    expected = self.expected(version)
    if not problem:
      problem = ("version never published" if expected is None else
                 differences(got, expected[index]))
    with self._lock:
      self.answers += 1
      self.latencies.append(seconds)
      self.by_version[version] = self.by_version.get(version, 0) + 1
      self.first_answer.setdefault(version, time.time())
      if problem:
        self.wrong += 1
        if len(self.wrong_examples) < 10:
          self.wrong_examples.append(f"request {index}, version {version}: {problem}")

  def error(self, index: int, code: str, details: str) -> None:
    with self._lock:
      self.errors[code] = self.errors.get(code, 0) + 1
      if len(self.error_examples) < 10:
        self.error_examples.append(f"request {index}: {code}: {details[:300]}")

  def line(self, elapsed: float) -> str:
    with self._lock:
      return (f"  {elapsed:5.0f} s: {self.answers} answers, {sum(self.errors.values())} errors, "
              f"{self.wrong} wrong, versions answered {sorted(self.by_version)}")


def _drained(spec: SoakSpec, workdir: str, checker: "_Checker", overtime: float) -> bool:
  """Whether the clients may stop, once `seconds` have passed: every version has been published
  and the last one has answered (it takes a few seconds to load), or DRAIN_SECONDS or 2 swap
  periods more, the longer, have passed."""
  published = _read_jsonl(os.path.join(workdir, "published.jsonl"))
  last = 1 + spec.swaps
  return overtime > max(DRAIN_SECONDS, 2 * spec.swap_seconds) or (
      any(p["version"] == last for p in published) and last in checker.first_answer)


def _client(address: str, requests: list, first: int, spec: SoakSpec, stop: threading.Event,
            checker: "_Checker") -> None:
  import grpc  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

  channel = grpc.insecure_channel(address)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  i = first
  try:
    while not stop.is_set():
      index = i % len(requests)
      request, k = requests[index]
      began = time.perf_counter()
      try:
        response = stub.Predict(request, timeout=spec.timeout)
      except grpc.RpcError as e:
        checker.error(index, e.code().name, e.details() or "")
      else:
        seconds = time.perf_counter() - began
        version = response.model_spec.version.value
        try:
          outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
          got = answer(outputs, k)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
          checker.record(index, version, None, seconds, f"unreadable: {type(e).__name__}: {e}")
        else:
          checker.record(index, version, got, seconds)
      i += spec.clients
  except Exception as e:  # noqa: BLE001  (counted, never silent)
    checker.error(i % len(requests), type(e).__name__, str(e))
  else:
    checker.client_done()
  finally:
    channel.close()


class _Sampler(threading.Thread):
  """Every second: the server's RSS (MiB) and its versions' states (GetModelStatus)."""

  def __init__(self, pid: int, address: str):
    super().__init__(name="soak-sampler", daemon=True)
    self.pid, self.address = pid, address
    self.rss: list[tuple[float, float]] = []
    self.states: list[tuple[float, dict[int, str]]] = []
    self._halt = threading.Event()

  def run(self) -> None:
    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import (get_model_status_pb2,  # noqa: PLC0415
                                         model_service_pb2_grpc)
    channel = grpc.insecure_channel(self.address)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    while not self._halt.wait(1.0):
      now = time.time()
      try:
        self.rss.append((now, rss_mib(self.pid)))
      except (OSError, RuntimeError):   # the server has exited: nothing more to sample
        break
      try:
        status = stub.GetModelStatus(request, timeout=5).model_version_status
        self.states.append((now, {s.version: names(s.state) for s in status}))
      except grpc.RpcError:
        pass
    channel.close()

  def stop(self) -> None:
    self._halt.set()
    self.join(timeout=10)


def rss_mib(pid: int) -> float:
  """A process's resident set (VmRSS) in MiB, from /proc."""
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


# ---- the server process ----------------------------------------------------------------------

def _start_server(spec: SoakSpec, workdir: str, base_path: str):
  """The local server in its own process, serving base_path as serving/models.config serves
  the model (the newest num_versions), with batching. Returns (Popen, address)."""
  config = os.path.join(workdir, "models.config")
  with open(config, "w") as f:
    f.write(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base_path}" '
            f'model_platform: "tensorflow" model_version_policy {{ latest {{ num_versions: '
            f'{spec.num_versions} }} }} }} }}\n')
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  log = open(os.path.join(workdir, "server.log"), "w")  # noqa: SIM115 (the child's from now)
  server = subprocess.Popen(
      [sys.executable, "-m", "serving.server", "--host=127.0.0.1", f"--port={port}",
       "--rest_api_port=0", f"--model_config_file={config}",
       f"--file_system_poll_wait_seconds={spec.poll_seconds}", "--enable_batching",
       f"--batching_parameters_file={spec.batching_parameters_file}"],
      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return server, f"127.0.0.1:{port}"


def _stop_server(server: subprocess.Popen, log: str) -> dict | None:
  """SIGTERM (the server stops as tensorflow_model_server does); returns the batching stats it
  logs on the way out (None if it logged none)."""
  if server.poll() is None:
    server.send_signal(signal.SIGTERM)
    try:
      server.wait(timeout=60)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()
  with open(log) as f:
    for line in f:
      if "Batching stats: " in line:
        return json.loads(line.split("Batching stats: ", 1)[1])
  return None


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]  # not a line being written
