"""Training steps per tf.function call (`runtime.steps_per_loop`): throughput against one step per
call, and the check that the trained models are the same, bit for bit.

  .venv/bin/python bench/steps_per_loop.py                    # `make train`'s experiment, ~10 min
  .venv/bin/python bench/steps_per_loop.py --quick            # 2 + 2 epochs, ~2 min

Each value of --loops runs the experiment (export off) in its own spawned process and work
directory, one after the other, --repeats times, interleaved (1, 10, 1, 10, ...) so that drift
on a shared machine hits them alike. Throughput is training sequences per second of each stage
(pretrain, then SkipRec) as run() reports it: the time inside the epochs' training loops, so
evaluation and checkpoints are not in it, the progress bar is. Then every metric of the result
and every model weight of the final checkpoints are compared with the first value's. Prints a
table and writes JSON to --out.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ml100k_common import REPO, in_fresh_process, int_list  # noqa: E402

EXPERIMENT = flags.DEFINE_string("experiment", "default", "Named experiment.")
LOOPS = flags.DEFINE_list("loops", ["1", "10"], "Values of runtime.steps_per_loop; the first is "
                          "the reference of the comparison.")
REPEATS = flags.DEFINE_integer("repeats", 1, "Runs of each value.")
QUICK = flags.DEFINE_bool("quick", False, "2 pretrain epochs and 2 SkipRec epochs.")
WORKDIR = flags.DEFINE_string("workdir", os.path.join(REPO, "runs", "steps_per_loop"),
                              "Parent of the work directories.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "steps_per_loop",
                                              "result.json"), "Where the JSON goes.")
COMPARED = ("valid", "test", "valid_by_kind", "test_by_kind", "valid_blocks", "test_blocks",
            "threshold_sweep", "steps", "best_epoch", "epochs_run")


def train(experiment: str, steps_per_loop: int, quick: bool, workdir: str) -> dict:
  """Child process only: one run() with its progress bar going to /dev/null."""
  import shutil
  import time

  import tf_skiprec  # noqa: F401  (Keras 2 before TensorFlow)
  from absl import logging

  from tf_skiprec.experiments import get_config
  from tf_skiprec.training import run

  logging.set_verbosity(logging.WARNING)
  config = get_config(experiment)
  config.export.base_dir = ""
  config.runtime.steps_per_loop = steps_per_loop
  if quick:
    config.train.pretrain_epochs, config.train.epochs = 2, 2
  shutil.rmtree(workdir, ignore_errors=True)
  sys.stdout = open(os.devnull, "w")  # the progress bar is drawn (and paid for), not shown
  start = time.perf_counter()
  result = run(config, workdir)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, "pretrain", "metrics.json")) as f:
    pretrain = json.load(f)
  return {"steps_per_loop": steps_per_loop, "wall_seconds": wall, "result": result,
          "stages": {name: {k: r[k] for k in ("steps", "train_seconds", "sequences_per_second")}
                     for name, r in (("pretrain", pretrain), ("skiprec", result))}}


def weights(workdir: str) -> dict[str, np.ndarray]:
  import tf_skiprec  # noqa: F401
  import tensorflow as tf

  out = {}
  for stage, directory in (("pretrain", os.path.join(workdir, "pretrain")), ("skiprec", workdir)):
    path = tf.train.latest_checkpoint(os.path.join(directory, "checkpoints"))
    for name, _ in tf.train.list_variables(path):
      if name.startswith("model/"):
        out[f"{stage}:{name}"] = tf.train.load_variable(path, name)
  return out


def main(argv):
  del argv
  loops = int_list("loops", LOOPS.value, "1,10")
  runs = []
  for repeat in range(REPEATS.value):
    for n in loops:
      workdir = os.path.join(WORKDIR.value, f"loop{n}_r{repeat}")
      print(f"steps_per_loop={n} (repeat {repeat + 1}/{REPEATS.value}) ...", flush=True)
      row = in_fresh_process(train, EXPERIMENT.value, n, QUICK.value, workdir)
      row["workdir"] = workdir
      runs.append(row)
  reference = runs[0]
  ref_weights = weights(reference["workdir"])
  for row in runs:
    theirs = weights(row["workdir"])
    row["same_metrics"] = all(row["result"][k] == reference["result"][k] for k in COMPARED)
    row["different_weights"] = sorted(
        k for k in ref_weights if k not in theirs or not np.array_equal(ref_weights[k], theirs[k]))
    row["same_weights"] = not row["different_weights"] and theirs.keys() == ref_weights.keys()
  table = ["| steps_per_loop | pretrain seq/s | SkipRec seq/s | wall s | metrics and weights as "
           f"steps_per_loop={loops[0]} |", "|---|---|---|---|---|"]
  summary = {}
  for n in loops:
    mine = [r for r in runs if r["steps_per_loop"] == n]
    rates = {s: statistics.fmean(r["stages"][s]["sequences_per_second"] for r in mine)
             for s in ("pretrain", "skiprec")}
    same = all(r["same_metrics"] and r["same_weights"] for r in mine)
    summary[n] = {**rates, "wall_seconds": statistics.fmean(r["wall_seconds"] for r in mine),
                  "bit_identical": same}
    table.append(f"| {n} | {rates['pretrain']:.0f} | {rates['skiprec']:.0f} | "
                 f"{summary[n]['wall_seconds']:.0f} | {'yes' if same else 'NO'} |")
  base = summary[loops[0]]
  for n in loops[1:]:
    summary[n]["speedup"] = {s: summary[n][s] / base[s] for s in ("pretrain", "skiprec")}
  print("\n".join(table))
  for n in loops[1:]:
    print(f"steps_per_loop={n}: x{summary[n]['speedup']['pretrain']:.3f} (pretrain), "
          f"x{summary[n]['speedup']['skiprec']:.3f} (SkipRec) training throughput against "
          f"{loops[0]}")
  test = reference["result"]["test"]
  print(f"test NDCG@10 {test['NDCG@10']:.6f} at {reference['result']['test_blocks']['mean']:.4f} "
        "blocks (every run)" if all(r["same_metrics"] for r in runs) else "results differ")
  os.makedirs(os.path.dirname(OUT.value), exist_ok=True)
  for row in runs:
    row["result"] = {k: row["result"][k] for k in COMPARED + ("sequences_per_second",)}
  with open(OUT.value, "w") as f:
    json.dump({"experiment": EXPERIMENT.value, "quick": QUICK.value, "summary": summary,
               "runs": runs, "python": sys.version.split()[0]}, f, indent=2)
  print(f"wrote {OUT.value}")


if __name__ == "__main__":
  app.run(main)
