"""Where a B = 1 request's time goes in a trained export: the per-part table of issue 15.

  .venv/bin/python bench/request_parts.py --run=ml100k_cnn=/tmp/st/ml100k_cnn   # ~2 min a run

A trace (RunMetadata) costs more than the ops it times at this scale (12 ms of op time for a
1.3 ms request), so each part is timed as a difference of whole requests instead. From the run's
best model, one SavedModel holds nested signatures, each a prefix of serving_default's work
(tf_skiprec/export/serving_module.py, the same code):

  nothing    history -> its shape: the Session run, feeding and fetching
  encode     + the raw-id lookups and left-padding (ServingModule.encode)
  embed      + the item embedding
  policy     encode + the policy network (P(keep) of every block)
  head       embed + the softmax over the catalogue, top-k and the output id lookups (no block)
  one_block  head + the first block
  full       every block;  serving_default: the policy's blocks, as exported

Timed in --timing_processes fresh processes (TF Serving's 1 + 1 threads, Eigen kernels), the
signatures interleaved, on the run's validation histories, with each harness in turn
(--harness): "c", TF_SessionRun from C as TF Serving calls Session::Run (bench/session_run.c),
and "python", a Python Session (tf_skiprec/export/runner.py). Parts: Session = nothing; lookups and
encoding = encode - nothing; embedding = embed - encode; policy = policy - encode; softmax, top-k
and outputs = head - embed; one block = (full - head) / N; the conditionals = serving_default -
(head + policy - encode + executed blocks x one block). Writes
bench/results/request_parts/<name>.json (a table per harness) and prints the tables.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

import c_session  # noqa: E402  (bench/)
from ml100k_common import REPO, in_fresh_process, restore_best_run  # noqa: E402  (bench/)

RUNS = flags.DEFINE_multi_string("run", [], "NAME=WORKDIR of a finished gumbel/rl run.")
USERS = flags.DEFINE_integer("users", 256, "Validation histories cycled through.")
REPS = flags.DEFINE_integer("reps", 600, "Calls per signature.")
PROCESSES = flags.DEFINE_integer("timing_processes", 3, "Fresh timing processes per harness.")
HARNESS = flags.DEFINE_enum("harness", "both", ["both", "c", "python"],
                            "c: TF_SessionRun from C; python: a Python Session; both: each.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "request_parts"),
                          "Directory of the JSON.")
PARTS = ("nothing", "encode", "embed", "policy", "head", "one_block", "full", "serving_default")


def export_parts(workdir: str, base: str, users: int) -> dict:
  """Child process only: the nested-signature SavedModel of the run's best model in base/parts,
  its validation histories (raw ids) in base/histories.npy."""
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from absl import logging  # noqa: PLC0415

  from tf_skiprec.export.exporter import raw_histories  # noqa: PLC0415
  from tf_skiprec.export.serving_module import ServingModule  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  config, data, model = restore_best_run(workdir)
  vocab = os.path.join(base, "vocab.txt")
  with open(vocab, "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(data.id_map.raw_ids.tolist()) + "\n")
  module = ServingModule(model, vocab, config.data.max_len, threshold=config.policy.threshold)
  spec = tf.TensorSpec([None, None], tf.string, name="history")
  k = tf.constant([10], tf.int32)

  def head(x):
    scores, line = module.top_items(x[:, -1], 10)
    return {"item_ids": module.line_to_raw.lookup(tf.cast(line, tf.int64)), "scores": scores}

  def embed(history):
    ids, _, _ = module.encode(history)
    return module.backbone.embed(ids, training=False)

  parts = {
      "nothing": lambda h: {"shape": tf.shape(h)},
      "encode": lambda h: {"ids": module.encode(h)[0]},
      "embed": lambda h: {"x": embed(h)[0]},
      "policy": lambda h: {"p": module.keep_probability(module.encode(h)[0])},
      "head": lambda h: head(embed(h)[0]),
      "one_block": lambda h: head(module.blocks[0].run(*embed(h))),
      "full": lambda h: module.recommend(h, k, None),
      "serving_default": lambda h: module.recommend(
          h, k, tf.constant([module.default_threshold]), None),
  }
  signatures = {name: tf.function(fn, input_signature=[spec]) for name, fn in parts.items()}
  tf.saved_model.save(module, os.path.join(base, "parts"), signatures=signatures)
  dense = next(iter(data.pipelines.evaluation(data.valid, users)))["history"].numpy()
  np.save(os.path.join(base, "histories.npy"), raw_histories(dense, data.id_map))
  # The per-block op count: the ops of one block's function as exported (before the grappler
  # passes a Session runs on load), without its arguments and return.
  graph = module.blocks[0].run.get_concrete_function().graph
  ops = [op.type for op in graph.get_operations()
         if op.type not in ("Placeholder", "Identity", "NoOp", "Const")]
  return {"num_blocks": config.model.num_blocks, "channels": config.model.channels,
          "policy_body": config.policy.body, "num_items": data.id_map.num_items,
          "max_len": config.data.max_len, "block_ops": len(ops),
          "block_op_types": dict(sorted(collections.Counter(ops).items()))}


def time_parts(export_dir: str, histories: str, reps: int) -> dict:
  """Child process only: median ms of each signature at B = 1, interleaved; and the blocks
  serving_default ran."""
  os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # TF Serving's standard CPU build: Eigen kernels
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from tf_skiprec.export.runner import SavedModelRunner  # noqa: PLC0415

  raw = np.load(histories, allow_pickle=True)
  runner = SavedModelRunner(export_dir, intra_op_threads=1, inter_op_threads=1)
  times = {name: [] for name in PARTS}
  blocks = []
  try:
    for r in range(reps + 5):
      row = raw[r % len(raw)][np.newaxis]
      for name in PARTS:
        start = time.perf_counter()
        out = runner.run({"history": row}, name)
        if r >= 5:
          times[name].append(time.perf_counter() - start)
          if name == "serving_default":
            blocks.append(int(out["blocks_executed"][0]))
  finally:
    runner.close()
  return {**{name: 1000 * statistics.median(t) for name, t in times.items()},
          "mean_blocks": float(np.mean(blocks))}


def time_parts_c(binary: str, export_dir: str, histories: str, reps: int) -> dict:
  """time_parts' numbers from one fresh process of bench/session_run.c."""
  raw = np.load(histories, allow_pickle=True)
  timed = c_session.time_signatures(binary, [export_dir], [(name, 0, name) for name in PARTS],
                                    raw, [(1, reps)], intra=1, inter=1,
                                    blocks_call="serving_default")[1]
  return {**{name: statistics.median(t) for name, t in timed["times"].items()},
          "mean_blocks": timed["mean_blocks"]}


def parts_table(ms: dict, num_blocks: int) -> list[tuple[str, float]]:
  """[(part, ms)] from the signature medians (see the module docstring)."""
  block = (ms["full"] - ms["head"]) / num_blocks
  return [
      ("Session run, feed and fetch", ms["nothing"]),
      ("raw-id lookups and encoding", ms["encode"] - ms["nothing"]),
      ("item embedding", ms["embed"] - ms["encode"]),
      ("softmax, top-k and output lookups", ms["head"] - ms["embed"]),
      ("policy network", ms["policy"] - ms["encode"]),
      ("one block (mean over all)", block),
      ("the first block alone", ms["one_block"] - ms["head"]),
      ("conditionals and dispatch (serving_default's rest)",
       ms["serving_default"] - (ms["head"] + ms["policy"] - ms["encode"]
                                + ms["mean_blocks"] * block)),
  ]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not RUNS.value:
    raise app.UsageError("give at least one --run=NAME=WORKDIR (a finished gumbel or rl run)")
  os.makedirs(OUT.value, exist_ok=True)
  harnesses = ["c", "python"] if HARNESS.value == "both" else [HARNESS.value]
  build = tempfile.TemporaryDirectory()
  binary = c_session.build(build.name) if "c" in harnesses else None
  for spec in RUNS.value:
    name, _, workdir = spec.partition("=")
    if not name or not os.path.isfile(os.path.join(workdir, "config.json")):
      raise app.UsageError(f"--run={spec}: expected NAME=WORKDIR of a finished run.")
    runs = {harness: [] for harness in harnesses}
    with tempfile.TemporaryDirectory() as base:
      info = in_fresh_process(export_parts, workdir, base, USERS.value)
      args = (os.path.join(base, "parts"), os.path.join(base, "histories.npy"), REPS.value)
      for _ in range(PROCESSES.value):
        for harness in harnesses:  # in turn, so that the machine's drift hits both alike
          runs[harness].append(time_parts_c(binary, *args) if harness == "c"
                               else in_fresh_process(time_parts, *args))
    out = {"command": f"bench/request_parts.py --run={spec}", "workdir": workdir, **info}
    for harness in harnesses:
      ms = {key: statistics.median(run[key] for run in runs[harness]) for key in runs[harness][0]}
      parts = parts_table(ms, info["num_blocks"])
      print(f"\n{name} ({harness}): {info['num_blocks']} blocks x {info['channels']} channels, "
            f"policy {info['policy_body']}, {info['num_items']} items, window {info['max_len']}; "
            f"serving_default ran {ms['mean_blocks']:.2f} blocks; {info['block_ops']} ops a block "
            f"({', '.join(f'{k} {v}' for k, v in info['block_op_types'].items())})")
      print("| part of a B = 1 request | ms |\n|---|---|")
      for part, value in parts:
        print(f"| {part} | {value:.3f} |")
      print(f"| full (every block) | {ms['full']:.3f} |\n| serving_default | "
            f"{ms['serving_default']:.3f} |")
      out[harness] = {"signature_ms": ms, "per_process": runs[harness], "parts_ms": dict(parts)}
    path = os.path.join(OUT.value, f"{name}.json")
    with open(path, "w") as f:
      json.dump(out, f, indent=2)
    print(f"written {path}")
  build.cleanup()


if __name__ == "__main__":
  app.run(main)
