"""An epoch's input pipeline with tf.data's autotuning off (the pipelines' own options) against
the same pipeline with it on: the epoch's training steps, and the deletion of its iterator,
which the trainer does when the next epoch starts.

  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 taskset -c 1 \\
    .venv/bin/python bench/input_teardown.py --data=../shared/data/ml-100k            # ~7 min
  .venv/bin/python bench/input_teardown.py --data=../shared/data/ml-100k --quick      # ~1 min

Each round runs one epoch of ml100k_sasrec_2's training on RecBole's samples
(train.window_stride=1, 256 windows a step, the variant sas2_gelu_prefix) with each variant in
turn, on one model, through the trainer's own loop (steps.make_train_loop, one step a call),
from a new iterator over `Pipelines.train` (a new shuffle each round, as each epoch has); then
deletes the iterator, timing the wall clock and the process's CPU time. Rounds alternate the
variants so that drift on a shared machine hits both. Autotuning changes no batch: the first
--check batches of both variants are compared, element by element, before timing.
The JSON (--out) holds every round's figures.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ml100k_common import REPO, ml100k_config, pinning, resolve_data, write_results  # noqa: E402

DATA = flags.DEFINE_string("data", "", "ML-100k in RecBole's atomic format (ml-100k.inter).")
ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each runs an epoch of each variant.")
STEPS = flags.DEFINE_integer("steps", 0, "Steps an epoch (0: the whole epoch, 232 steps).")
CHECK = flags.DEFINE_integer("check", 20, "Batches compared between the variants.")
QUICK = flags.DEFINE_bool("quick", False, "1 round of 40 steps.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "input_teardown"),
                          "Directory of the JSON result.")

VARIANTS = ("untuned", "autotuned")  # the pipelines' options; the same with autotuning on


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = resolve_data(DATA.value)
  rounds, steps = (1, 40) if QUICK.value else (ROUNDS.value, STEPS.value)
  if rounds < 1 or steps < 0 or CHECK.value < 1:
    raise app.UsageError(f"--rounds={rounds}, --steps={steps}, --check={CHECK.value}: expected "
                         "--rounds >= 1, --steps >= 0 (0: the whole epoch) and --check >= 1")

  import numpy as np
  import tensorflow as tf

  from tf_skiprec.data.run_data import RunData
  from tf_skiprec.training import builders
  from tf_skiprec.training.steps import make_train_loop

  config = ml100k_config("ml100k_sasrec_2", data_dir, seed=0)
  config.train.window_stride, config.train.batch_size = 1, 256
  data = RunData.load(config.data, config.train.window_stride)
  batch_size = config.train.batch_size
  epoch_steps = -(-len(data.train) // batch_size)
  if steps > epoch_steps:
    raise app.UsageError(f"--steps={steps}: an epoch has {epoch_steps} steps; give at most that "
                         "(or 0 for the whole epoch)")
  steps = steps or epoch_steps

  def dataset(variant: str, epoch: int) -> tf.data.Dataset:
    ds = data.pipelines.train(data.train, batch_size, seed=0, epoch=epoch)
    if variant == "autotuned":
      options = tf.data.Options()
      options.autotune.enabled = True
      ds = ds.with_options(options)
    assert ds.options().autotune.enabled == (variant == "autotuned")
    return ds

  pairs = zip(*(dataset(v, 0).take(CHECK.value) for v in VARIANTS))
  same = all(np.array_equal(a[k].numpy(), b[k].numpy()) for a, b in pairs for k in a)
  print(f"First {CHECK.value} batches of both variants {'equal' if same else 'DIFFER'}.",
        flush=True)

  strategy = tf.distribute.get_strategy()
  model = builders.build_model(config, data.vocab_size)
  optimizer = builders.make_optimizer(config.train.learning_rate)
  step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
  loop = make_train_loop(model, {"backbone": optimizer}, strategy, step_counter, seed=0,
                         mode="pretrain")
  one = tf.constant(1, tf.int64)
  warm = iter(strategy.experimental_distribute_dataset(dataset("untuned", 0)))
  loop(warm, one)  # traced before any round is timed
  del warm
  runs = {v: [] for v in VARIANTS}
  epoch = 1
  for r in range(rounds):
    for variant in VARIANTS:
      iterator = iter(strategy.experimental_distribute_dataset(dataset(variant, epoch)))
      start = time.perf_counter()
      for _ in range(steps):
        tf.nest.map_structure(lambda t: t.numpy(), loop(iterator, one))
      stepped, cpu = time.perf_counter(), time.process_time()
      del iterator
      done, cpu_done = time.perf_counter(), time.process_time()
      runs[variant].append({"epoch": epoch, "steps_seconds": stepped - start,
                            "teardown_seconds": done - stepped,
                            "teardown_cpu_seconds": cpu_done - cpu})
      print(f"round {r + 1}/{rounds} {variant:9s}: {steps} steps {stepped - start:6.1f} s, "
            f"iterator deleted in {done - stepped:5.2f} s ({cpu_done - cpu:.2f} s CPU)",
            flush=True)
      epoch += 1
  summary = {}
  for variant, rows in runs.items():
    summary[variant] = {
        "steps_seconds_median": statistics.median(r["steps_seconds"] for r in rows),
        "teardown_seconds_median": statistics.median(r["teardown_seconds"] for r in rows),
        "teardown_seconds_max": max(r["teardown_seconds"] for r in rows)}
    s = summary[variant]
    print(f"{variant:9s}: steps {s['steps_seconds_median']:.1f} s an epoch (median), teardown "
          f"{s['teardown_seconds_median']:.2f} s (median), {s['teardown_seconds_max']:.2f} s (max)")
  path = write_results(OUT.value, "input_teardown", QUICK.value, {
      "data": data_dir, "rounds": rounds, "steps": steps, "batch_size": batch_size,
      "batches_equal": same, "runs": runs, "summary": summary, **pinning()})
  print(f"Results written to {path}")


if __name__ == "__main__":
  app.run(main)
