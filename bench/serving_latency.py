"""Serving latency of an exported 64-block x 64-channel SkipRec model: skipping against running
every block, and a gRPC load test against the local server.

  .venv/bin/python bench/serving_latency.py            # ~5 min on this project's 2-core CPU
  .venv/bin/python bench/serving_latency.py --quick    # 8 blocks, short runs: ~1.5 min

1. A SkipRec model (random weights; ML-100k's 1,682 items, histories of up to 50) whose policy
   gives every user a different keep/skip vector: P(keep) is spread over (user, block), so at
   B = 64 nearly every block is kept by some rows and skipped by others (gather/scatter on every
   block: the hard case for batching). It is exported with tf_skiprec.export (which checks the
   export against the in-memory model) and loaded as TF Serving loads it
   (tf_skiprec/export/runner.py: a Session on the SignatureDefs).
2. Policies running ~75%, 50% and 25% of the blocks: `threshold` (a serving_default input) set
   to the matching quantile of P(keep) over the benchmark users.
3. Median latency of serving_default against full at B = 1 (one user per call, cycling through
   256 users) and at B = 64, calls interleaved, in `--timing_processes` fresh processes that only
   load and time the export. Speed-up = full / skip in each process, the table has the median
   over processes, as a fraction of the ideal N / (mean executed blocks).
4. Load test: the local gRPC server in its own process, `--clients` concurrent clients (threads,
   one user per request, histories padded to the full window as the client library sends them)
   for `--seconds` each against serving_default (50% policy) and against full: queries per
   second, p50/p99 latency, errors; with TF Serving's server-side batching off and on
   (`--batching`; on: --enable_batching with serving/batching_parameters.txt, so concurrent
   one-user requests are merged and run the gather/scatter path).
Prints a table and writes JSON to bench/out/.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from grpc_load import free_port, load_test  # noqa: E402  (bench/)
from ml100k_common import REPO, in_fresh_process, write_results  # noqa: E402  (bench/)

BLOCKS = flags.DEFINE_integer("blocks", 64, "Residual blocks.")
CHANNELS = flags.DEFINE_integer("channels", 64, "Channels.")
ITEMS = flags.DEFINE_integer("num_items", 1682, "Catalogue size (ML-100k's by default).")
MAX_LEN = flags.DEFINE_integer("max_len", 50, "History window.")
USERS = flags.DEFINE_integer("users", 256, "Benchmark users (distinct histories).")
REPS_1 = flags.DEFINE_integer("reps_b1", 300, "Calls per configuration at B = 1.")
REPS_64 = flags.DEFINE_integer("reps_b64", 40, "Calls per configuration at B = 64.")
CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients in the load test.")
SECONDS = flags.DEFINE_float("seconds", 30.0, "Duration of each load test.")
BATCHING = flags.DEFINE_list("batching", ["off", "on"], "Load tests against the server with "
                             "TF Serving's server-side batching off and/or on (--enable_batching "
                             "with serving/batching_parameters.txt).")
QUICK = flags.DEFINE_bool("quick", False, "8 blocks, few calls, 5 s load tests.")
INTRA = flags.DEFINE_integer("intra_op_threads", 1, "Threads per op (TF Serving's "
                             "--tensorflow_intra_op_parallelism); 0 = TensorFlow's default.")
INTER = flags.DEFINE_integer("inter_op_threads", 1, "Ops run at once (TF Serving's "
                             "--tensorflow_inter_op_parallelism); 0 = TensorFlow's default. "
                             "1 was the fastest here, for latency and for the load test.")
ONEDNN = flags.DEFINE_bool("onednn", False, "Use TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS)."
                           " TF Serving's standard CPU build uses Eigen's.")
PROCESSES = flags.DEFINE_integer("timing_processes", 3, "Processes that each time every "
                                 "configuration; the table reports the median.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "out"), "Directory of the JSON.")
TARGETS = (0.75, 0.5, 0.25)


def build_model(blocks: int, channels: int, num_items: int, max_len: int):
  """A SkipRec model with a spread, user-dependent policy, and its IdMap (raw ids "i<n>"):
  bench/soak_versions.py's random_skiprec with seed 0."""
  from soak_versions import random_skiprec  # noqa: PLC0415  (bench/)
  return random_skiprec(blocks, channels, num_items, max_len, seed=0)


def bench_id_map(num_items: int):
  """Raw ids "i0", "i1", ... for dense ids num_items..1."""
  from tf_skiprec.data.idmap import IdMap  # noqa: PLC0415
  return IdMap(np.array([f"i{n}" for n in range(num_items)]), np.arange(num_items, 0, -1))


def user_histories(num_users: int, num_items: int, max_len: int) -> np.ndarray:
  """[U, max_len] dense histories, lengths uniform in 5..max_len, left-padded."""
  rng = np.random.default_rng(1)
  ids = rng.integers(1, num_items + 1, size=(num_users, max_len)).astype(np.int32)
  for row, length in enumerate(rng.integers(5, max_len + 1, size=num_users)):
    ids[row, : max_len - length] = 0
  return ids


def latency_table(runner, raw: np.ndarray, prob: np.ndarray, reps_1: int, reps_64: int) -> list:
  """Median ms of serving_default (each policy) and full, at B = 1 and B = 64; the calls of the
  four configurations are interleaved, so drift on a shared machine hits them alike."""
  num_blocks = prob.shape[1]
  thresholds = {target: float(np.quantile(prob, 1.0 - target)) for target in TARGETS}
  rows = []
  for batch, reps in ((1, reps_1), (64, reps_64)):
    groups = [slice(i, i + batch) for i in range(0, len(raw) - batch + 1, batch)]
    calls = {"full": lambda g: runner.run({"history": raw[g]}, "full")}
    for target, t in thresholds.items():
      calls[target] = lambda g, t=t: runner.run(
          {"history": raw[g], "threshold": np.full([g.stop - g.start], t, np.float32)})
    times = {name: [] for name in calls}
    for r in range(reps + 3):
      for name, call in calls.items():
        start = time.perf_counter()
        call(groups[r % len(groups)])
        if r >= 3:  # the first calls warm up
          times[name].append(time.perf_counter() - start)
    full_ms = 1000 * statistics.median(times["full"])
    used = prob[: len(groups) * batch] if batch > 1 else prob[: min(reps, len(prob))]
    for target, t in thresholds.items():
      skip_ms = 1000 * statistics.median(times[target])
      executed = float((used >= t).sum(axis=1).mean())
      ideal = num_blocks / executed
      rows.append({"batch": batch, "target": target, "threshold": t, "mean_blocks": executed,
                   "full_ms": full_ms, "skip_ms": skip_ms, "speedup": full_ms / skip_ms,
                   "ideal": ideal, "fraction_of_ideal": full_ms / skip_ms / ideal})
      print(f"B={batch:<3} {target:.0%} policy: {executed:5.1f}/{num_blocks} blocks, full "
            f"{full_ms:7.2f} ms, skip {skip_ms:7.2f} ms, speed-up {full_ms / skip_ms:4.2f} "
            f"(ideal {ideal:4.2f}, {full_ms / skip_ms / ideal:.0%} of it)", flush=True)
  return rows


def main(argv):
  del argv
  blocks, reps_1, reps_64, seconds = BLOCKS.value, REPS_1.value, REPS_64.value, SECONDS.value
  if QUICK.value:
    blocks, reps_1, reps_64, seconds = 8, 40, 8, 5.0
  os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if ONEDNN.value else "0"  # read when TF loads
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  tf.config.threading.set_intra_op_parallelism_threads(INTRA.value)
  tf.config.threading.set_inter_op_parallelism_threads(INTER.value)
  from tf_skiprec.export.exporter import export_model, raw_histories  # noqa: PLC0415

  started = time.perf_counter()
  model, id_map = build_model(blocks, CHANNELS.value, ITEMS.value, MAX_LEN.value)
  dense = user_histories(USERS.value, ITEMS.value, MAX_LEN.value)
  base = tempfile.mkdtemp(prefix="serving_latency_")
  export = export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec",
                        max_len=MAX_LEN.value, sample_histories=dense[:16])
  size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export["path"])
                for f in fs) / 2**20
  print(f"exported {blocks} blocks x {CHANNELS.value} channels, {ITEMS.value} items to "
        f"{export['path']} ({size_mb:.1f} MB)", flush=True)
  raw = raw_histories(dense, id_map)
  runs = [in_fresh_process(time_rows, export["path"], USERS.value, ITEMS.value, MAX_LEN.value,
                           INTRA.value, INTER.value, ONEDNN.value, reps_1, reps_64)
          for _ in range(PROCESSES.value)]
  rows = combine_processes(runs)

  half = next(r["threshold"] for r in rows if r["batch"] == 1 and r["target"] == 0.5)
  load = []
  for batching in BATCHING.value:
    if batching not in ("off", "on"):
      raise app.UsageError(f"--batching={batching}: expected off and/or on, e.g. --batching=off,on")
    port = free_port()
    extra = (["--enable_batching", "--batching_parameters_file="
              + os.path.join(REPO, "serving", "batching_parameters.txt")]
             if batching == "on" else [])
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.server", f"--port={port}", "--rest_api_port=0",
         "--host=127.0.0.1", "--model_name=skiprec",
         f"--tensorflow_intra_op_parallelism={INTRA.value}",
         f"--tensorflow_inter_op_parallelism={INTER.value}",
         f"--model_base_path={os.path.join(base, 'skiprec')}", *extra], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      from serving.client import wait_until_available  # noqa: PLC0415
      wait_until_available(f"127.0.0.1:{port}", "skiprec", watch={"the server": server})
      for signature, threshold in (("serving_default", half), ("full", None)):
        result = load_test(f"127.0.0.1:{port}", raw, signature, threshold, CLIENTS.value, seconds)
        load.append({**result, "batching": batching})
    finally:
      server.terminate()
      server.wait(timeout=60)

  print("\n| B | policy | mean executed blocks | full (ms) | skip (ms) | speed-up | ideal | "
        "fraction of ideal | per timing process |\n|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['batch']} | {r['target']:.0%} | {r['mean_blocks']:.1f} / {blocks} | "
          f"{r['full_ms']:.2f} | {r['skip_ms']:.2f} | {r['speedup']:.2f} | {r['ideal']:.2f} | "
          f"{r['fraction_of_ideal']:.2f} | "
          f"{' / '.join(f'{f:.2f}' for f in r['fraction_per_process'])} |")
  print("\n| load test | batching | queries/s | p50 (ms) | p99 (ms) | errors |\n"
        "|---|---|---|---|---|---|")
  for r in load:
    print(f"| {r['signature']} ({r['clients']} clients, {r['seconds']:.0f} s) | {r['batching']} | "
          f"{r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
  total = time.perf_counter() - started
  print(f"\nTotal {total:.0f} s.")
  path = write_results(OUT.value, "serving_latency", QUICK.value, {
      "blocks": blocks, "channels": CHANNELS.value, "num_items": ITEMS.value,
      "max_len": MAX_LEN.value, "users": USERS.value, "export_mb": size_mb, "latency": rows,
      "intra_op_threads": INTRA.value, "inter_op_threads": INTER.value, "onednn": ONEDNN.value,
      "load": load, "total_seconds": total})
  print(f"Results written to {path}")


def combine_processes(runs: list[list[dict]]) -> list[dict]:
  """Per configuration, the median over timing processes of each process's speed-up (full and
  skip are interleaved within a process; a process's speed drifts by up to ~30% from one
  process to the next here, not always alike for both signatures), with the median latencies
  for scale and each process's fraction of ideal."""
  rows = []
  for i, row in enumerate(runs[0]):
    speedup = statistics.median(run[i]["speedup"] for run in runs)
    rows.append({**row, "full_ms": statistics.median(run[i]["full_ms"] for run in runs),
                 "skip_ms": statistics.median(run[i]["skip_ms"] for run in runs),
                 "speedup": speedup, "fraction_of_ideal": speedup / row["ideal"],
                 "fraction_per_process": [run[i]["fraction_of_ideal"] for run in runs]})
  return rows


def time_rows(export_dir: str, users: int, num_items: int, max_len: int, intra: int, inter: int,
              onednn: bool, reps_1: int, reps_64: int) -> list[dict]:
  """Child process only: the latency table of one export, timed in a process that only serves
  it (as TF Serving's is): timed in the process that had just built, traced and checked the
  model, the same calls were up to 15% slower, and unevenly so."""
  os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"  # read when TF loads
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  tf.config.threading.set_intra_op_parallelism_threads(intra)
  tf.config.threading.set_inter_op_parallelism_threads(inter)
  from tf_skiprec.export.exporter import raw_histories  # noqa: PLC0415
  from tf_skiprec.export.runner import SavedModelRunner  # noqa: PLC0415
  raw = raw_histories(user_histories(users, num_items, max_len), bench_id_map(num_items))
  runner = SavedModelRunner(export_dir, intra_op_threads=intra, inter_op_threads=inter)
  prob = runner.run({"history": raw}, "decisions")["keep_probability"]   # [U, N]
  rows = latency_table(runner, raw, prob, reps_1, reps_64)
  runner.close()
  return rows


if __name__ == "__main__":
  app.run(main)
