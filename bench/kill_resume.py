"""Kill a real training run with SIGKILL at random moments, resume it, and compare the result with
the same run never interrupted: metrics, step count and final weights.

  .venv/bin/python bench/kill_resume.py --experiment=default --kills=3
  .venv/bin/python bench/kill_resume.py --experiment=ml100k_10 \
      --dataset=recbole:PATH/ml-100k --kills=3 --override=train.checkpoint_every_steps=20

Each attempt runs `train.py` in a subprocess; a kill lands at a uniform random time between the
first checkpoint of that attempt and `--max_wait` seconds later (a run that finishes first is
simply the last attempt). Prints the comparison and writes it as JSON to --out.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = flags.DEFINE_string("experiment", "default", "Named experiment (tf_skiprec/experiments/).")
DATASET = flags.DEFINE_string("dataset", None, "train.py's --dataset.")
OVERRIDES = flags.DEFINE_multi_string("override", [], "train.py's --override, for both runs.")
KILLS = flags.DEFINE_integer("kills", 3, "SIGKILLs before the run is let finish.")
MAX_WAIT = flags.DEFINE_float("max_wait", 60.0, "Latest kill, in seconds after a checkpoint.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
WORKDIR = flags.DEFINE_string("workdir", "runs/kill_resume", "Parent of the two work directories.")
OUT = flags.DEFINE_string("out", "bench/results/kill_resume/result.json", "Where the JSON goes.")


def _command(workdir: str) -> list[str]:
  cmd = [sys.executable, os.path.join(REPO, "train.py"), f"--experiment={EXPERIMENT.value}",
         f"--workdir={workdir}", "--override=runtime.progress=false"]
  cmd += [f"--dataset={DATASET.value}"] if DATASET.value else []
  cmd += [f"--override={o}" for o in OVERRIDES.value]
  # Exports would be published twice; the comparison is about training.
  return cmd + ["--override=export.base_dir="]


def _checkpoints(workdir: str) -> str:
  """What the state files name as the latest checkpoints (changes with every save)."""
  named = []
  for root, _, files in os.walk(workdir):
    if "checkpoint" in files:
      try:
        with open(os.path.join(root, "checkpoint")) as f:
          named.append(root + f.readline())
      except FileNotFoundError:
        pass
  return "".join(sorted(named))


def _weights(workdir: str) -> dict[str, np.ndarray]:
  import tf_skiprec  # noqa: F401,PLC0415  (Keras 2 before TensorFlow)
  import tensorflow as tf  # noqa: PLC0415
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if n.startswith("model/") and "OPTIMIZER_SLOT" not in n}


def main(argv):
  del argv
  rng = random.Random(SEED.value)
  whole, killed = (os.path.join(WORKDIR.value, name) for name in ("whole", "killed"))
  for path in (whole, killed):
    if os.path.exists(os.path.join(path, "metrics.json")):
      raise app.UsageError(f"{path} holds a finished run. Fix: remove it or pass a new --workdir.")
  start = time.perf_counter()
  subprocess.run(_command(whole), check=True, stdout=subprocess.DEVNULL)
  whole_seconds = time.perf_counter() - start

  kill_times, attempts = [], 0
  while True:
    attempts += 1
    proc = subprocess.Popen(_command(killed), stdout=subprocess.DEVNULL)
    if len(kill_times) >= KILLS.value:
      assert proc.wait() == 0, "the resumed run failed"
      break
    before, t0 = _checkpoints(killed), time.perf_counter()  # t0: the attempt's start
    while proc.poll() is None and _checkpoints(killed) == before:
      time.sleep(0.05)
    wait = rng.uniform(0.0, MAX_WAIT.value)
    try:
      if proc.wait(timeout=wait) != 0:
        raise RuntimeError(f"train.py failed (exit {proc.returncode}) before its kill")
      break  # finished before its kill
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kill_times.append(round(time.perf_counter() - t0, 2))

  with open(os.path.join(whole, "metrics.json")) as f:
    a = json.load(f)
  with open(os.path.join(killed, "metrics.json")) as f:
    b = json.load(f)
  wa, wb = _weights(whole), _weights(killed)
  max_diff = max(float(np.max(np.abs(wa[n].astype(np.float64) - wb[n]))) if wa[n].size else 0.0
                 for n in wa)
  keys = ("valid", "test", "steps", "best_epoch", "epochs_run")
  result = {
      "experiment": EXPERIMENT.value, "overrides": OVERRIDES.value, "kills": len(kill_times),
      "kill_seconds_after_start": kill_times, "attempts": attempts,
      "whole_seconds": round(whole_seconds, 1),
      "metrics_equal": all(a[k] == b[k] for k in keys),
      "weights_equal": set(wa) == set(wb) and max_diff == 0.0,
      "max_weight_difference": max_diff,
      "whole": {k: a[k] for k in keys}, "resumed": {k: b[k] for k in keys},
  }
  os.makedirs(os.path.dirname(OUT.value) or ".", exist_ok=True)
  with open(OUT.value, "w") as f:
    json.dump(result, f, indent=2)
  print(f"{EXPERIMENT.value}: {len(kill_times)} kills at {kill_times} s after each attempt's start; "
        f"steps {a['steps']} vs {b['steps']}; test NDCG@10 {a['test']['NDCG@10']:.6f} vs "
        f"{b['test']['NDCG@10']:.6f}; metrics equal: {result['metrics_equal']}; weights equal: "
        f"{result['weights_equal']} (largest difference {max_diff:.3g}). -> {OUT.value}")


if __name__ == "__main__":
  app.run(main)
