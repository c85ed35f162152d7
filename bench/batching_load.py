"""What TF Serving's batching parameters do to a TRAINED SkipRec export under load: the local
server with batching off, with serving/batching_parameters.txt, and with one parameter changed
at a time; serving_default (the export's own threshold) against full.

  .venv/bin/python bench/batching_load.py --run=synthetic32_64ch=/tmp/exp64/run   # ~10 min

1. The run's best model is restored and exported (bench/ml100k_common.py's export_run), with
   its validation histories as raw ids: real users, so the policy's decisions are the trained
   ones (users who need the same blocks batch well; random decisions would not).
2. For each --variants entry, the local server in its own process (--tensorflow_intra_op /
   inter_op parallelism 1, as the other serving benchmarks) and `--clients` concurrent
   one-user clients for `--seconds` against serving_default, then against full: queries/s, p50,
   p99, errors (bench/grpc_load.py's load_test). "off" runs without --enable_batching;
   "shipped" uses serving/batching_parameters.txt; "NAME:field=value;field=value" is the shipped
   file with those fields replaced (allowed_batch_sizes=1/2/4 for a list, empty for none).
   The table in serving/README.md was measured when the shipped file's sizes started at 8: its
   "shipped" row is today's sizes_from_8, and its sizes_from_1 row is today's shipped.
3. The server's own batching stats (requests, batches, padding rows), logged on shutdown.
Prints a table; writes bench/results/batching_load/<name>.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from grpc_load import free_port, load_test  # noqa: E402  (bench/)
from ml100k_common import REPO, export_run, in_fresh_process, write_results  # noqa: E402  (bench/)

SHIPPED = os.path.join(REPO, "serving", "batching_parameters.txt")
DEFAULT_VARIANTS = [
    "off", "shipped",
    "sizes_from_8:allowed_batch_sizes=8/16/32/64",
    "timeout_0:batch_timeout_micros=0;allowed_batch_sizes=8/16/32/64",
    "timeout_10ms:batch_timeout_micros=10000;allowed_batch_sizes=8/16/32/64",
    "threads_1:num_batch_threads=1;allowed_batch_sizes=8/16/32/64",
]
WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")

RUN = flags.DEFINE_string("run", None, "NAME=WORKDIR of a finished gumbel or rl run.")
VARIANTS = flags.DEFINE_list("variants", DEFAULT_VARIANTS, "Server configurations (see above).")
CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent one-user clients.")
SECONDS = flags.DEFINE_float("seconds", 30.0, "Duration of each load test.")
USERS = flags.DEFINE_integer("users", 512, "Validation histories the clients cycle through.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "batching_load"),
                          "Directory of the JSON.")


def variant_text(spec: str, shipped: str) -> str | None:
  """A --variants entry -> the BatchingParameters text (None: batching off)."""
  if spec == "off":
    return None
  if spec == "shipped":
    return shipped
  name, _, overrides = spec.partition(":")
  if not name or not overrides:
    raise app.UsageError(f"--variants entry {spec!r}: expected off, shipped or "
                         "NAME:field=value;field=value")
  text = shipped
  for override in overrides.split(";"):
    field, _, value = override.partition("=")
    field = field.strip()
    text = re.sub(rf"(?m)^\s*{field}\b.*\n?", "", text)  # the shipped lines of that field
    if field == "allowed_batch_sizes":
      text += "".join(f"allowed_batch_sizes: {int(v)}\n" for v in value.split("/") if v)
    elif field in WRAPPED:
      text += f"{field} {{ value: {int(value)} }}\n"
    elif field == "pad_variable_length_inputs":
      text += f"{field}: {value.strip().lower()}\n"
    else:
      raise app.UsageError(f"--variants entry {spec!r}: unknown field {field!r}. Fix: one of "
                           f"{', '.join(WRAPPED)}, allowed_batch_sizes, pad_variable_length_inputs")
  return text


def serve_and_load(model_dir: str, raw: np.ndarray, params_file: str | None,
                   clients: int, seconds: float) -> tuple[list[dict], dict | None]:
  """The local server on model_dir (batching from params_file, or off), load-tested on
  serving_default then full; returns (results, the server's batching stats)."""
  port = free_port()
  extra = (["--enable_batching", f"--batching_parameters_file={params_file}"]
           if params_file else [])
  log_path = os.path.join(os.path.dirname(model_dir), f"server_{port}.log")
  with open(log_path, "w") as log:
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.server", f"--port={port}", "--rest_api_port=0",
         "--host=127.0.0.1", "--model_name=skiprec", f"--model_base_path={model_dir}",
         "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1", *extra],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  results = []
  try:
    from serving.client import wait_until_available  # noqa: PLC0415
    wait_until_available(f"127.0.0.1:{port}", "skiprec", watch={"the server": server})
    for signature in ("serving_default", "full"):
      results.append(load_test(f"127.0.0.1:{port}", raw, signature, None, clients, seconds))
  finally:
    server.terminate()
    server.wait(timeout=60)
  stats = None
  with open(log_path) as f:
    for line in f:
      if "Batching stats: " in line:
        stats = json.loads(line.split("Batching stats: ", 1)[1])
  return results, stats


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name, _, workdir = (RUN.value or "").partition("=")
  if not name or not os.path.isfile(os.path.join(workdir, "config.json")):
    raise app.UsageError(f"--run={RUN.value}: expected NAME=WORKDIR of a finished run (with "
                         "config.json). Fix: e.g. --run=synthetic32_64ch=/tmp/exp64/run")
  with open(SHIPPED) as f:
    shipped = f.read()
  texts = {spec: variant_text(spec, shipped) for spec in VARIANTS.value}  # usage errors first
  started = time.perf_counter()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    info = in_fresh_process(export_run, workdir, tmp, USERS.value)
    raw = np.load(os.path.join(tmp, "histories.npy"), allow_pickle=True)
    model_dir = os.path.dirname(info["skiprec"])
    print(f"{name}: {info['num_blocks']} blocks x {info['channels']} channels, "
          f"{info['num_items']} items, policy {info['policy_body']} at threshold "
          f"{info['threshold']}", flush=True)
    for i, spec in enumerate(VARIANTS.value):
      params_file = None
      if texts[spec] is not None:
        params_file = os.path.join(tmp, f"batching_{i}.txt")
        with open(params_file, "w") as f:
          f.write(texts[spec])
      print(f"variant {spec}", flush=True)
      results, stats = serve_and_load(model_dir, raw, params_file, CLIENTS.value, SECONDS.value)
      rows += [{**r, "variant": spec, "batching_parameters": texts[spec], "server_batching": stats}
               for r in results]
  text = table(rows)
  print("\n" + text)
  path = write_results(OUT.value, name, False, {
      "run": workdir, "model": info, "clients": CLIENTS.value, "seconds": SECONDS.value,
      "rows": rows, "table": text, "wall_seconds": time.perf_counter() - started,
      "command": f".venv/bin/python bench/batching_load.py --run={RUN.value}"})
  print(f"Results written to {path}")


def table(rows: list[dict]) -> str:
  """Markdown: per variant, serving_default and full side by side."""
  lines = ["| server | serving_default q/s | p50 | p99 | full q/s | p50 | p99 | skip/full q/s | "
           "errors | requests per batch | padding rows per request |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  by_variant: dict[str, dict[str, dict]] = {}
  for r in rows:
    by_variant.setdefault(r["variant"], {})[r["signature"]] = r
  for variant, pair in by_variant.items():
    skip, full = pair["serving_default"], pair["full"]
    stats = skip["server_batching"]
    batching = ("-", "-") if not stats else (
        f"{stats['requests'] / max(1, stats['batches']):.2f}",
        f"{stats['padding_rows'] / max(1, stats['requests']):.2f}")
    lines.append(f"| {variant} | {skip['qps']:.0f} | {skip['p50_ms']:.1f} | "
                 f"{skip['p99_ms']:.1f} | {full['qps']:.0f} | {full['p50_ms']:.1f} | "
                 f"{full['p99_ms']:.1f} | {skip['qps'] / full['qps']:.2f} | "
                 f"{skip['errors'] + full['errors']} | {batching[0]} | {batching[1]} |")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
