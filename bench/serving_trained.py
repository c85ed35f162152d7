"""Serving speed of TRAINED SkipRec exports, as TF Serving runs them: skipping against every block,
with everything a request pays counted (issue 15).

  .venv/bin/python bench/serving_trained.py \
      --run=ml100k_cnn=/tmp/st/ml100k_cnn --run=ml100k_pool=/tmp/st/ml100k_pool \
      --run=synthetic32=/tmp/skf2/0/gumbel                      # ~3 min per run

Each --run is NAME=WORKDIR, a finished gumbel or rl run directory (config.json, best/). How the
runs above were trained is in BUILD_NOTES.md (issue 15). For each run:
1. Its best model is restored and exported with tf_skiprec.export (checked against the in-memory
   model), beside a backbone-only export of the same backbone: its `decisions` signature does the
   same request work (lookups, encoding, output lookup) without the policy, so the difference
   between the two `decisions` latencies is the policy's own cost.
2. Real histories: the run's validation histories (its own data), as raw ids.
3. In --timing_processes fresh processes that only load and time the exports (TF Serving's
   --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism, 1 and 1 by default),
   serving_default at the export's own threshold and cap (the run's, from its metrics.json),
   full, and both `decisions` are called interleaved at B = 1 (cycling through the users) and
   B = 64. Medians per process; the table takes the median over processes of each process's
   speed-up. Two harnesses (--harness), a
   process of each in turn:
   - c: TF Serving's own call with nothing around it: TF_LoadSessionFromSavedModel and
     TF_SessionRun on the signatures' tensors from C (bench/session_run.c, bench/c_session.py);
   - python: tf_skiprec/export/runner.py, a Python Session on the SignatureDefs (the local
     server's path), whose Session.run adds ~0.2 ms a call that TF Serving does not pay.
Prints a table and writes bench/results/serving_trained/summary.json: rows with model, harness,
batch, full_ms, skip_ms, speedup, mean_blocks, num_blocks, ideal (N / mean_blocks),
fraction_of_ideal, policy_ms and policy_share (of skip_ms).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

import c_session  # noqa: E402  (bench/)
from ml100k_common import REPO, export_run, in_fresh_process  # noqa: E402  (bench/)

RUNS = flags.DEFINE_multi_string("run", [], "NAME=WORKDIR of a finished gumbel/rl run.")
USERS = flags.DEFINE_integer("users", 512, "Validation histories used (the first ones).")
REPS_1 = flags.DEFINE_integer("reps_b1", 400, "Calls per signature at B = 1.")
REPS_64 = flags.DEFINE_integer("reps_b64", 40, "Calls per signature at B = 64.")
INTRA = flags.DEFINE_integer("intra_op_threads", 1, "TF Serving's "
                             "--tensorflow_intra_op_parallelism.")
INTER = flags.DEFINE_integer("inter_op_threads", 1, "TF Serving's "
                             "--tensorflow_inter_op_parallelism.")
PROCESSES = flags.DEFINE_integer("timing_processes", 3, "Fresh timing processes per run and "
                                 "harness.")
HARNESS = flags.DEFINE_enum("harness", "both", ["both", "c", "python"],
                            "c: TF_SessionRun from C; python: a Python Session; both: each.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "serving_trained"),
                          "Directory of summary.json.")
BATCHES = (1, 64)


def time_exports(skiprec: str, backbone: str, histories: str, intra: int, inter: int,
                 reps_1: int, reps_64: int) -> list[dict]:
  """Child process only: median ms of serving_default, full and both `decisions`, interleaved,
  at each batch size, and the blocks serving_default ran."""
  os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # TF Serving's standard CPU build: Eigen kernels
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  tf.config.threading.set_intra_op_parallelism_threads(intra)
  tf.config.threading.set_inter_op_parallelism_threads(inter)
  from tf_skiprec.export.runner import SavedModelRunner  # noqa: PLC0415

  raw = np.load(histories, allow_pickle=True)
  runners = {name: SavedModelRunner(path, intra_op_threads=intra, inter_op_threads=inter)
             for name, path in (("skiprec", skiprec), ("backbone", backbone))}
  rows = []
  try:
    for batch, reps in ((1, reps_1), (64, reps_64)):
      groups = [slice(i, i + batch) for i in range(0, len(raw) - batch + 1, batch)]
      calls = {
          "skip": lambda g: runners["skiprec"].run({"history": raw[g]}),
          "full": lambda g: runners["skiprec"].run({"history": raw[g]}, "full"),
          "decisions": lambda g: runners["skiprec"].run({"history": raw[g]}, "decisions"),
          "decisions_no_policy": lambda g: runners["backbone"].run({"history": raw[g]},
                                                                  "decisions"),
      }
      times = {name: [] for name in calls}
      blocks = []
      for r in range(reps + 3):
        g = groups[r % len(groups)]
        for name, call in calls.items():
          start = time.perf_counter()
          out = call(g)
          if r >= 3:  # the first calls warm up
            times[name].append(time.perf_counter() - start)
          if name == "skip" and r >= 3:
            blocks.extend(out["blocks_executed"].tolist())
      ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
      rows.append({"batch": batch, **{f"{k}_ms": v for k, v in ms.items()},
                   "mean_blocks": float(np.mean(blocks))})
  finally:
    for runner in runners.values():
      runner.close()
  return rows


def time_exports_c(binary: str, skiprec: str, backbone: str, histories: str, intra: int,
                   inter: int, reps_1: int, reps_64: int) -> list[dict]:
  """The same calls and rows as time_exports, in one fresh process of bench/session_run.c."""
  raw = np.load(histories, allow_pickle=True)
  calls = [("skip", 0, "serving_default"), ("full", 0, "full"), ("decisions", 0, "decisions"),
           ("decisions_no_policy", 1, "decisions")]
  timed = c_session.time_signatures(binary, [skiprec, backbone], calls, raw,
                                    [(1, reps_1), (64, reps_64)], intra=intra, inter=inter,
                                    blocks_call="skip")
  return [{"batch": batch, **{f"{k}_ms": statistics.median(v) for k, v in entry["times"].items()},
           "mean_blocks": entry["mean_blocks"]} for batch, entry in sorted(timed.items())]


def combine(name: str, info: dict, runs: list[list[dict]]) -> list[dict]:
  """Per batch size: the median over processes of each process's speed-up and policy share,
  with the median latencies for scale."""
  rows = []
  for i, first in enumerate(runs[0]):
    per = [run[i] for run in runs]
    speedups = [r["full_ms"] / r["skip_ms"] for r in per]
    policy = [max(0.0, r["decisions_ms"] - r["decisions_no_policy_ms"]) for r in per]
    speedup = statistics.median(speedups)
    ideal = info["num_blocks"] / first["mean_blocks"]
    rows.append({
        "model": name, "harness": first["harness"], "batch": first["batch"],
        "full_ms": statistics.median(r["full_ms"] for r in per),
        "skip_ms": statistics.median(r["skip_ms"] for r in per),
        "speedup": speedup, "speedup_per_process": speedups,
        "mean_blocks": first["mean_blocks"], "num_blocks": info["num_blocks"],
        "ideal": ideal, "fraction_of_ideal": speedup / ideal,
        "policy_ms": statistics.median(policy),
        "policy_share": statistics.median(p / r["skip_ms"] for p, r in zip(policy, per)),
        "channels": info["channels"], "policy_body": info["policy_body"],
        "num_items": info["num_items"], "max_len": info["max_len"]})
  return rows


def table(rows: list[dict]) -> str:
  lines = ["| model | harness | B | full (ms) | serving_default (ms) | speed-up | blocks | ideal "
           "| of ideal | policy (ms) | policy share |", "|---" * 11 + "|"]
  for r in rows:
    lines.append(f"| {r['model']} ({r['policy_body']}, {r['channels']} ch) | {r['harness']} | "
                 f"{r['batch']} | {r['full_ms']:.3f} | {r['skip_ms']:.3f} | "
                 f"**{r['speedup']:.2f}×** | "
                 f"{r['mean_blocks']:.2f} / {r['num_blocks']} | {r['ideal']:.2f}× | "
                 f"{r['fraction_of_ideal']:.0%} | {r['policy_ms']:.3f} | {r['policy_share']:.0%} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not RUNS.value:
    raise app.UsageError("give at least one --run=NAME=WORKDIR (a finished gumbel or rl run)")
  runs = []
  for spec in RUNS.value:
    name, _, workdir = spec.partition("=")
    if not name or not os.path.isfile(os.path.join(workdir, "config.json")):
      raise app.UsageError(f"--run={spec}: expected NAME=WORKDIR of a finished run (with "
                           "config.json). Fix: e.g. --run=synthetic32=/tmp/skf2/0/gumbel")
    runs.append((name, workdir))
  started = time.perf_counter()
  rows = []
  harnesses = ["c", "python"] if HARNESS.value == "both" else [HARNESS.value]
  with tempfile.TemporaryDirectory() as tmp:
    binary = c_session.build(os.path.join(tmp, "build")) if "c" in harnesses else None
    for name, workdir in runs:
      base = os.path.join(tmp, name)
      os.makedirs(base)
      info = in_fresh_process(export_run, workdir, base, USERS.value)
      timed = {harness: [] for harness in harnesses}
      args = (info["skiprec"], info["backbone"], os.path.join(base, "histories.npy"),
              INTRA.value, INTER.value, REPS_1.value, REPS_64.value)
      for p in range(PROCESSES.value):
        for harness in harnesses:  # in turn, so that the machine's drift hits both alike
          got = (time_exports_c(binary, *args) if harness == "c"
                 else in_fresh_process(time_exports, *args))
          timed[harness].append([{**row, "harness": harness} for row in got])
        print(f"{name}: timing round {p + 1}/{PROCESSES.value} done", flush=True)
      for harness in harnesses:
        rows += [{**row, "workdir": workdir} for row in combine(name, info, timed[harness])]
      print(table(rows[-len(BATCHES) * len(harnesses):]), flush=True)
  text = table(rows)
  print("\n" + text)
  os.makedirs(OUT.value, exist_ok=True)
  path = os.path.join(OUT.value, "summary.json")
  with open(path, "w") as f:
    json.dump({"command": "bench/serving_trained.py " + " ".join(argv[1:] or [
        f"--run={s}" for s in RUNS.value]), "intra_op_threads": INTRA.value,
        "inter_op_threads": INTER.value, "timing_processes": PROCESSES.value,
        "harnesses": harnesses, "rows": rows,
        "table": text, "wall_seconds": time.perf_counter() - started}, f, indent=2)
  print(f"written {path}")


if __name__ == "__main__":
  app.run(main)
