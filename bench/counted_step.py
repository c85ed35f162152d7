"""The training step on RecBole's samples with the last block at the counted positions only
(backbone.counted) against the same step over every position, side by side in one process.

  .venv/bin/python bench/counted_step.py --data=../shared/data/ml-100k          # ~10 min
  .venv/bin/python bench/counted_step.py --data=../shared/data/ml-100k --quick  # ~1 min

On RecBole's samples (train.window_stride=1: a window ending at every item, its last label
counted; a history's first window counts all of its own), the loss needs the last block's
output at one position of each window's 50. The step the trainer runs
(`model.compute_loss_and_stats`: `counted_hidden`, the last block at those positions) is timed
against the step over the whole stack (`position_loss(backbone(x))`, the trainer's before
backbone.counted), on the same model, the same real ML-100k batches and the same Adam update,
for SASRec of --blocks blocks with ml100k_sasrec_2's settings (64 wide, 2 heads, feed-forward
256, GELU, dropout 0.2) on RecBole's samples, 256 a step (the variant sas2_gelu_prefix). Rounds alternate the two (--steps each) so that drift on a shared
machine hits both; the ratio is the median round of the whole stack over the median round of
`counted`. Run it pinned to one core with one thread to compare with RecBole's epoch timed the
same way (BUILD_NOTES.md, issue 17):
  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 taskset -c 1 .venv/bin/python ...
Both steps also give the loss of one batch, whose equality (to 1e-5, dropout off) is printed as
a check. Writes JSON to --out.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ml100k_common import (REPO, int_list, ml100k_config, pinning, resolve_data,  # noqa: E402
                           write_results)

DATA = flags.DEFINE_string("data", "", "ML-100k in RecBole's atomic format (ml-100k.inter).")
BLOCKS = flags.DEFINE_list("blocks", ["2", "4", "8"], "SASRec depths to time.")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of each step.")
STEPS = flags.DEFINE_integer("steps", 20, "Training steps per round.")
STRIDE = flags.DEFINE_integer("window_stride", 1, "train.window_stride of the batches (1: RecBole's "
                               "samples; 25: ml100k_sasrec_2_w25's windows).")
BATCH = flags.DEFINE_integer("batch_size", 256, "Windows a step (256 with stride 1, RecBole's).")
QUICK = flags.DEFINE_bool("quick", False, "2 blocks, 2 rounds of 5 steps.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "counted_step"),
                          "Directory of the JSON result.")


def time_depth(data_dir: str, num_blocks: int, rounds: int, steps: int, stride: int = 1,
               batch_size: int = 256) -> dict:
  """Both steps on `num_blocks` blocks: seconds per step of each round, and the loss check."""
  import tensorflow as tf

  from tf_skiprec.data.run_data import RunData
  from tf_skiprec.training import builders

  config = ml100k_config("ml100k_sasrec_2", data_dir, seed=0)
  config.model.num_blocks = num_blocks
  config.train.window_stride, config.train.batch_size = stride, batch_size
  data = RunData.load(config.data, config.train.window_stride)
  batches = list(data.pipelines.train(data.train, config.train.batch_size, seed=0, epoch=0,
                                      drop_remainder=True).take(rounds * steps))
  model = builders.build_model(config, data.vocab_size)
  optimizer = builders.make_optimizer(config.train.learning_rate)
  model.compute_loss_and_stats(batches[0], training=False)  # one eager call first
  variables = model.trainable_variables

  def whole_stack(batch, training=True):
    hidden = model.backbone(batch["inputs"], training=training)
    return model.position_loss(hidden, batch, training=training)

  def counted(batch, training=True):
    return model.compute_loss_and_stats(batch, training=training)[0]

  def step_of(loss_fn):
    @tf.function
    def step(batch):
      with tf.GradientTape() as tape:
        loss = loss_fn(batch)
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss
    return step

  check = {name: float(fn(batches[0], training=False))
           for name, fn in (("whole_stack", whole_stack), ("counted", counted))}
  steps_of = {"whole_stack": step_of(whole_stack), "counted": step_of(counted)}
  for step in steps_of.values():  # traced, and warm
    step(batches[0])
  seconds = {name: [] for name in steps_of}
  counted_positions = [int(tf.reduce_sum(tf.cast(b["labels"] != 0, tf.int32))) for b in batches]
  for r in range(rounds):
    for name, step in steps_of.items():
      start = time.perf_counter()
      for batch in batches[r * steps:(r + 1) * steps]:
        loss = step(batch)
      float(loss)  # waits for the last step
      seconds[name].append((time.perf_counter() - start) / steps)
  med = {name: statistics.median(s) for name, s in seconds.items()}
  return {"num_blocks": num_blocks, "window_stride": stride, "batch_size": config.train.batch_size,
          "window": config.data.max_len, "seconds_per_step": seconds, "median": med,
          "ratio": med["whole_stack"] / med["counted"], "loss_check": check,
          "counted_positions_per_batch": statistics.mean(counted_positions), **pinning()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = resolve_data(DATA.value)
  blocks = [2] if QUICK.value else int_list("blocks", BLOCKS.value, "2,4,8")
  rounds, steps = (2, 5) if QUICK.value else (ROUNDS.value, STEPS.value)
  results = []
  for n in blocks:
    r = time_depth(data_dir, n, rounds, steps, STRIDE.value, BATCH.value)
    results.append(r)
    check = r["loss_check"]
    same = abs(check["whole_stack"] - check["counted"]) <= 1e-5 * abs(check["whole_stack"])
    print(f"{n} blocks: whole stack {r['median']['whole_stack'] * 1e3:.1f} ms/step, counted "
          f"{r['median']['counted'] * 1e3:.1f} ms/step: {r['ratio']:.2f}x "
          f"({r['counted_positions_per_batch']:.0f} counted positions of "
          f"{r['batch_size'] * r['window']} a batch); one batch's loss "
          f"{check['whole_stack']:.6f} / {check['counted']:.6f} ({'equal' if same else 'DIFFER'})",
          flush=True)
  path = write_results(OUT.value, "counted_step", QUICK.value,
                       {"data": data_dir, "rounds": rounds, "steps": steps, "results": results})
  print(f"Results written to {path}")


if __name__ == "__main__":
  app.run(main)
