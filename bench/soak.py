"""A soak test of the serving set-up under version swaps: a PredictionService server with
server-side batching answers clients without pause while a new version is exported and published
every `swap_seconds`, and its version policy retires the old ones. Every answer is checked
against the version it names; the server's RSS and its versions' states are sampled.

  report = run_soak(SoakSpec(seconds=600, swap_seconds=30), workdir)   # bench/serving_soak.py

It lives in bench/, not serving/, because it builds and exports models (tf_skiprec), which the
server and its client must not need (tests/test_layout.py).
  report["errors"], report["wrong_answers"], report["rss_mb"]["drift"]

What runs, each in its own process, so that the server's RSS is its own:
- the server: `python -m serving.server` with a ModelServerConfig like serving/models.config
  but serving the newest `num_versions` (1 by default: the version retired is the one every
  request was going to a moment before, so requests are queued and running on it when it goes),
  --enable_batching and serving/batching_parameters.txt;
- the publisher (`python bench/soak.py <workdir>`): version v is a SkipRec model with random
  weights (seed v), exported by tf_skiprec.export (which checks it against the in-memory model)
  into a staging folder, then loaded alone to compute the answer to every request of the pool,
  one request at a time (each answer as TF Serving gives it without batching), and only then
  renamed into the model's folder. Version 1 is published before the clients start, version
  1 + i at `swap_seconds` * (i - 1/2) after; all but the first `ahead` are exported while the
  clients run, so the export's work is part of the load.
- the clients (this process, `clients` threads): each sends the pool's Predict requests in turn
  (serving_default with its own k and threshold, and `full`), as serving.client sends them: the
  history left-padded to the full window, k and threshold one value per row.

An answer is wrong when the version it names was never published, or when its top-k differs from
that version's answer alone: item ids (two ids may trade places only when their scores tie
within ATOL), scores within ATOL, and blocks executed. Every failed call is an error, by status
code, and so is any other failure in a client (an answer that cannot be read is a wrong one);
`clients_ok` counts the clients that ran to the end. The clients run `seconds`, and on until the
last version published has answered (loading and warming it up takes 10 to 25 s under the load
here; at most two swap periods more).

The server's RSS: `drift` is the median of the last tenth of the run minus that of the tenth
after the first swap; `floors` are the samples just before each version is published (the
served versions loaded and warm, the retired ones unloaded), whose `floor_drift` (the last minus
the first with num_versions loaded) and `floor_slope` (MiB per swap over the second half, a
least-squares line) tell a leak, which climbs at every swap, from the allocator settling.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5                    # scores of one version: batched (gather/scatter) against alone
MODEL = "skiprec"
BATCHING_FILE = os.path.join(REPO, "serving", "batching_parameters.txt")


@dataclasses.dataclass
class SoakSpec:
  """One soak: how long, how often a version is published, and the model each version is."""
  seconds: float = 600.0
  swap_seconds: float = 30.0
  clients: int = 8
  num_versions: int = 1          # the version policy: the newest num_versions are served
  pool: int = 128                # distinct requests the clients cycle through
  full_share: float = 0.25       # of the pool, requests to the `full` signature
  blocks: int = 8
  channels: int = 32
  num_items: int = 500
  max_len: int = 20
  top_k: int = 10
  poll_seconds: float = 1.0      # the server's --file_system_poll_wait_seconds
  batching_parameters_file: str = BATCHING_FILE
  timeout: float = 30.0          # of one Predict call
  ahead: int = 1                 # versions exported before the clients start (the others are
                                 # exported during the soak, each before its turn)

  @property
  def swaps(self) -> int:
    """Versions published after the first: one per swap_seconds, the first half a period in."""
    return max(0, int(self.seconds / self.swap_seconds + 0.5))


# ---- the model of each version, and the request pool ----------------------------------------

def random_skiprec(blocks: int, channels: int, num_items: int, max_len: int, seed: int):
  """A SkipRec model with random weights (seed `seed`) whose policy gives spread, user-dependent
  decisions (its batch-norm variance shrunk, its head random), and its IdMap (raw ids "i<n>").
  The blocks' ReZero alphas are 0.1, so every block changes the scores."""
  import tf_skiprec  # noqa: F401, PLC0415  (Keras 2 before TensorFlow)
  import tensorflow as tf  # noqa: PLC0415
  from tf_skiprec.config import Config  # noqa: PLC0415
  from tf_skiprec.data.idmap import IdMap  # noqa: PLC0415
  from tf_skiprec.training import builders  # noqa: PLC0415

  tf.keras.utils.set_random_seed(seed)
  config = Config()
  config.train.mode = "gumbel"
  config.model.num_blocks, config.model.channels = blocks, channels
  config.data.max_len = max_len
  model = builders.build_model(config, vocab_size=num_items + 1)
  rng = np.random.default_rng(seed)
  for block in model.backbone.blocks:
    block.alpha.assign(0.1)
  norm = model.policy.norm
  norm.moving_variance.assign(np.full(norm.moving_variance.shape, 1e-4, np.float32))
  head = model.policy.head
  head.kernel.assign(rng.normal(0.0, 1.0, head.kernel.shape).astype(np.float32))
  head.bias.assign(np.zeros(head.bias.shape, np.float32))
  id_map = IdMap(np.array([f"i{n}" for n in range(num_items)]), np.arange(num_items, 0, -1))
  return model, id_map


def request_pool(spec: SoakSpec) -> list[dict]:
  """The clients' requests: [{"signature", "inputs": {alias: array}}], each one history of 1 to
  max_len raw ids (a few unknown), left-padded with b"" to max_len; serving_default ones with
  their own k and threshold."""
  rng = np.random.default_rng(7)
  pool = []
  for i in range(spec.pool):
    length = int(rng.integers(1, spec.max_len + 1))
    items = [f"i{n}".encode() for n in rng.integers(0, spec.num_items, length)]
    if i % 16 == 5:
      items[0] = b"not-in-the-catalogue"
    history = np.full([1, spec.max_len], b"", dtype=object)
    history[0, spec.max_len - length:] = items
    inputs = {"history": history, "k": np.array([1 + i % spec.top_k], np.int32)}
    if i < spec.pool * spec.full_share:
      pool.append({"signature": "full", "inputs": inputs})
    else:
      inputs["threshold"] = np.array([rng.uniform(0.2, 0.8)], np.float32)
      pool.append({"signature": "serving_default", "inputs": inputs})
  return pool


def answer(outputs: dict[str, np.ndarray], k: int) -> dict:
  """A Predict answer for one row -> {"ids", "scores", "blocks"} (its first k items). ValueError
  if an output does not have exactly one row."""
  rows = {alias: value.shape[:1] for alias, value in outputs.items()}
  if any(shape != (1,) for shape in rows.values()):
    raise ValueError(f"outputs for one history have rows {rows}")
  return {"ids": [i.decode("utf-8") for i in outputs["item_ids"][0][:k]],
          "scores": [float(s) for s in outputs["scores"][0][:k]],
          "blocks": int(outputs["blocks_executed"][0])}


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


# ---- the publisher (a process of its own) ------------------------------------------------------

def prepare_version(spec: SoakSpec, version: int, expected_dir: str, staging: str) -> dict:
  """Exports version `version` into `staging` and writes its answers alone to
  expected_dir/<version>.json. Returns {"version", "path", "export_seconds", "seconds"}."""
  from tf_skiprec.export.exporter import export_model  # noqa: PLC0415
  from tf_skiprec.export.runner import SavedModelRunner  # noqa: PLC0415

  began = time.monotonic()
  model, id_map = random_skiprec(spec.blocks, spec.channels, spec.num_items, spec.max_len,
                                 seed=version)
  rng = np.random.default_rng(version)
  samples = rng.integers(1, spec.num_items + 1, size=(8, spec.max_len)).astype(np.int32)
  exported = export_model(model, id_map, base_dir=staging, model_name=f"v{version}",
                          max_len=spec.max_len, sample_histories=samples, threshold=0.5,
                          top_k=spec.top_k)
  exported_at = time.monotonic()
  runner = SavedModelRunner(exported["path"])
  try:
    answers = [answer(runner.run(r["inputs"], r["signature"]), int(r["inputs"]["k"][0]))
               for r in request_pool(spec)]
  finally:
    runner.close()
  path = os.path.join(expected_dir, f"{version}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(answers, f)
  os.replace(path + ".tmp", path)
  return {"version": version, "path": exported["path"], "export_seconds": exported_at - began,
          "seconds": time.monotonic() - began}


def _publish_loop(workdir: str) -> None:
  """The publisher process (`python bench/soak.py <workdir>`): reads workdir/spec.json,
  prepares versions 1 to 1 + spec.ahead and publishes version 1 (renames it into the model's
  folder), waits for workdir/started (the clients' start time, written when they are on), then
  publishes version 1 + i at start + swap_seconds * (i - 1/2), each prepared before its turn
  while the clients run (the export's work is part of the load). Appends one JSON line per
  version to workdir/published.jsonl."""
  import tf_skiprec  # noqa: F401, PLC0415  (Keras 2 before TensorFlow)
  import tensorflow as tf  # noqa: PLC0415
  tf.get_logger().setLevel("ERROR")
  with open(os.path.join(workdir, "spec.json")) as f:
    spec = SoakSpec(**json.load(f))
  base_path, expected_dir, staging = _folders(workdir)
  prepared = {}

  def prepare(version: int) -> None:
    if version not in prepared:
      prepared[version] = prepare_version(spec, version, expected_dir, staging)

  def publish(version: int) -> None:
    record = prepared.pop(version)
    os.rename(record.pop("path"), os.path.join(base_path, str(version)))
    record["published_at"] = time.time()
    with open(os.path.join(workdir, "published.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")

  for version in range(1, 2 + min(spec.ahead, spec.swaps)):
    prepare(version)
  publish(1)
  started = os.path.join(workdir, "started")
  while not os.path.exists(started):
    time.sleep(0.1)
  with open(started) as f:
    start_time = float(f.read())
  for i in range(1, spec.swaps + 1):
    prepare(1 + i)
    delay = start_time + spec.swap_seconds * (i - 0.5) - time.time()
    if delay > 0:
      time.sleep(delay)
    publish(1 + i)


def _folders(workdir: str) -> tuple[str, str, str]:
  """(the model's base path, the answers' folder, the exports' staging folder)."""
  return (os.path.join(workdir, "models", MODEL), os.path.join(workdir, "expected"),
          os.path.join(workdir, "staging"))


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
    publisher = subprocess.Popen([sys.executable, os.path.abspath(__file__), workdir], cwd=REPO,
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
  return _report(spec, checker, samples, published, publisher_ok, batching, elapsed)


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
  and the last one has answered (it takes a few seconds to load), or 2 swap periods more have
  passed."""
  published = _read_jsonl(os.path.join(workdir, "published.jsonl"))
  last = 1 + spec.swaps
  return overtime > 2 * spec.swap_seconds or (
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


# ---- the report ------------------------------------------------------------------------------

def _report(spec: SoakSpec, checker: _Checker, samples: _Sampler, published: list[dict],
            publisher_ok: bool, batching: dict | None, elapsed: float) -> dict:
  rss = samples.rss
  times = np.array([t for t, _ in rss])
  values = np.array([v for _, v in rss])
  start = times[0] if len(times) else 0.0
  tenth = max(1.0, (times[-1] - start) / 10) if len(times) else 1.0
  first_swap = min((p["published_at"] for p in published if p["version"] > 1), default=start)

  def median_between(lo: float, hi: float) -> float | None:
    chosen = values[(times >= lo) & (times <= hi)]
    return float(np.median(chosen)) if len(chosen) else None

  early = median_between(first_swap, first_swap + tenth)
  late = median_between(times[-1] - tenth, times[-1]) if len(times) else None
  floors = [float(values[times < p["published_at"]][-1]) for p in published[1:]
            if (times < p["published_at"]).any()]
  steady = floors[spec.num_versions - 1:]   # num_versions loaded from then on
  half = steady[len(steady) // 2:]
  floor_slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else None
  retired = sorted({v for _, states in samples.states for v, s in states.items() if s == "END"})
  ms = np.array(checker.latencies) * 1000
  return {
      "spec": dataclasses.asdict(spec),
      "seconds": elapsed,
      "answers": checker.answers,
      "qps": checker.answers / elapsed if elapsed else 0.0,
      "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
      "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
      "errors": sum(checker.errors.values()),
      "errors_by_code": checker.errors,
      "error_examples": checker.error_examples,
      "wrong_answers": checker.wrong,
      "clients_ok": checker.clients_ok,
      "wrong_examples": checker.wrong_examples,
      "answers_by_version": {str(v): n for v, n in sorted(checker.by_version.items())},
      "versions_published": [p["version"] for p in published],
      "swaps_published": sum(p["version"] > 1 for p in published),
      "swaps_answered": max(0, len(checker.by_version) - 1),
      "versions_retired": retired,
      "publish_seconds": [round(p["seconds"], 2) for p in published],
      "first_answer_after_publish_seconds": {
          str(p["version"]): round(checker.first_answer[p["version"]] - p["published_at"], 2)
          for p in published if p["version"] > 1 and p["version"] in checker.first_answer},
      "publisher_ok": publisher_ok,
      "server_batching": batching,
      "rss_mb": {"first": float(values[0]) if len(values) else None,
                 "after_first_swap": early, "last_tenth": late,
                 "drift": None if early is None or late is None else late - early,
                 "max": float(values.max()) if len(values) else None,
                 "floors": [round(f, 1) for f in floors],
                 "floor_drift": steady[-1] - steady[0] if steady else None,
                 "floor_slope": floor_slope},
      "rss_samples": [[round(t - start, 1), round(v, 1)] for t, v in rss],
      "published_at": [[p["version"], round(p["published_at"] - start, 1)] for p in published],
  }


if __name__ == "__main__":
  _publish_loop(sys.argv[1])
