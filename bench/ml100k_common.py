"""What the benchmarks share: where the ML-100k data is, mean ± std over seeds, fresh processes,
and a finished run's best model restored and exported."""

from __future__ import annotations

import json
import os
import statistics

from absl import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join("..", "shared", "data", "ml-100k")  # relative to the repository
INTER_FILE = "ml-100k.inter"


def resolve_data(path: str) -> str:
  """An absolute data directory holding ml-100k.inter; tries the cwd, then the repository."""
  candidates = [path] if os.path.isabs(path) else [os.path.abspath(path), os.path.join(REPO, path)]
  for candidate in candidates:
    candidate = os.path.normpath(candidate)
    if os.path.isfile(os.path.join(candidate, INTER_FILE)):
      return candidate
    if os.path.isfile(candidate) and candidate.endswith(".inter"):
      return os.path.dirname(candidate)
  raise app.UsageError(
      f"--data={path}: no {INTER_FILE} in {' or '.join(map(os.path.normpath, candidates))}. "
      "Fix: pass the directory of ML-100k in RecBole's atomic format, e.g. "
      "--data=/work/shared/data/ml-100k.")


def int_list(flag: str, values: list[str], example: str) -> list[int]:
  """A comma-separated integer flag's values, at least one; a usage error that names the flag."""
  try:
    ints = [int(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--{flag} takes comma-separated integers, e.g. {example}.")
  if not ints:
    raise app.UsageError(f"--{flag} must name at least one integer, e.g. {example}.")
  return ints


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def in_fresh_process(fn, *args):
  """fn(*args) in a new spawned process, so that its ru_maxrss is that run's peak alone."""
  import multiprocessing
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(fn, args)


def restore_best_run(workdir: str):
  """Child process only: a finished run's (config, RunData, model), the model restored from
  workdir/best. FileNotFoundError names the directory when it holds no best checkpoint."""
  import tensorflow as tf

  from tf_skiprec.config import Config
  from tf_skiprec.data.run_data import RunData
  from tf_skiprec.training.builders import build_model

  config = Config.from_json_file(os.path.join(workdir, "config.json"))
  best = tf.train.latest_checkpoint(os.path.join(workdir, "best"))
  if best is None:
    raise FileNotFoundError(f"{workdir}/best holds no checkpoint. Fix: give a finished run.")
  data = RunData.load(config.data)
  model = build_model(config, data.vocab_size)
  tf.train.Checkpoint(model=model).restore(best).expect_partial()
  return config, data, model


def ml100k_config(experiment: str, data_dir: str, seed: int):
  """Child process only: quiets logging; the named experiment on ML-100k with this seed."""
  import tf_skiprec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
  from absl import logging
  from tensorflow.python.platform import tf_logging

  from tf_skiprec.experiments import get_config

  logging.set_verbosity(logging.WARNING)
  tf_logging.get_logger().setLevel("ERROR")
  config = get_config(experiment)
  config.data.dataset = f"recbole:{data_dir}"
  config.train.seed = seed
  config.runtime.progress = False
  return config


def measured_run(config, workdir: str, **tags) -> dict:
  """Child process only: `run()` with its wall time, peak memory and config; `tags` added."""
  import resource
  import time

  from tf_skiprec.training import run

  start = time.perf_counter()
  result = run(config, workdir)
  result["wall_seconds"] = time.perf_counter() - start
  result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
  result["config"] = config.to_dict()
  result.update(tags)
  return result


def pinning() -> dict:
  """{"threads": TensorFlow's thread variables as set, "cpus": the CPUs this process may run on},
  for a timing's JSON (the timings are compared pinned to one core, one thread)."""
  return {"threads": {k: os.environ.get(k, "") for k in ("TF_NUM_INTRAOP_THREADS",
                                                         "TF_NUM_INTEROP_THREADS")},
          "cpus": sorted(os.sched_getaffinity(0))}


def write_results(out_dir: str, name: str, quick: bool, payload: dict) -> str:
  """Writes payload (+ the Python version) to out_dir/<name>[_quick].json; returns the path."""
  import json
  import sys
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}_quick.json" if quick else f"{name}.json")
  with open(path, "w") as f:
    json.dump({**payload, "quick": quick, "python": sys.version.split()[0]}, f, indent=2)
  return path


def export_run(workdir: str, base: str, users: int) -> dict:
  """Child process only: the run's best model exported (SkipRec and backbone-only) under `base`,
  and its first `users` validation histories as raw ids in base/histories.npy. The SkipRec
  export decides as the run's own did: at the threshold and cap in its metrics.json, which
  train.calibrate_threshold and train.calibrate_max_blocks may have changed from config.json's."""
  import numpy as np  # noqa: PLC0415
  import tf_skiprec  # noqa: F401, PLC0415  (Keras 2 before TensorFlow loads)
  from absl import logging  # noqa: PLC0415

  from tf_skiprec.export.exporter import export_model, raw_histories  # noqa: PLC0415
  from tf_skiprec.model import BackboneModel  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  config, data, model = restore_best_run(workdir)
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  threshold = metrics.get("threshold", config.policy.threshold)
  max_blocks = metrics.get("max_blocks") or None
  dense = next(iter(data.pipelines.evaluation(data.valid, users)))["history"].numpy()
  common = dict(id_map=data.id_map, base_dir=base, max_len=config.data.max_len,
                sample_histories=dense[:32], threshold=threshold)
  skiprec = export_model(model, model_name="skiprec", max_blocks=max_blocks, **common)
  backbone = export_model(BackboneModel(model.backbone), model_name="backbone", **common)
  np.save(os.path.join(base, "histories.npy"), raw_histories(dense, data.id_map))
  return {"skiprec": skiprec["path"], "backbone": backbone["path"],
          "num_blocks": config.model.num_blocks, "channels": config.model.channels,
          "policy_body": config.policy.body, "threshold": threshold, "max_blocks": max_blocks,
          "num_items": data.id_map.num_items, "max_len": config.data.max_len}
