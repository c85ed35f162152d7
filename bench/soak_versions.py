"""What a soak (bench/soak.py) serves and sends: its spec, the versions the publisher exports,
and the clients' requests; and the publisher itself, a process of its own:

  python bench/soak_versions.py WORKDIR      # started by run_soak: reads WORKDIR/spec.json

Version v is a SkipRec model with random weights (seed v), exported by tf_skiprec.export (which
checks it against the in-memory model) into a staging folder, then loaded alone to compute the
answer to every request of the pool, one request at a time (each answer as TF Serving gives it
without batching), and only then renamed into the model's folder. Version 1 is published before
the clients start, version 1 + i at `swap_seconds` * (i - 1/2) after; all but the first `ahead`
are exported while the clients run, so the export's work is part of the load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
  """The publisher process (`python bench/soak_versions.py <workdir>`): reads workdir/spec.json,
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


if __name__ == "__main__":
  _publish_loop(sys.argv[1])
