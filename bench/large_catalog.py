"""Large catalogues: what grows with the number of items, at 10k, 100k and 1M items.

  .venv/bin/python bench/large_catalog.py            # ~5 min on this project's 2-core CPU, idle
  .venv/bin/python bench/large_catalog.py --quick    # 10k and 100k items, few steps: ~1 min

Every measurement runs in its own spawned process (bench/ml100k_common.in_fresh_process), so its
memory is its own; peaks are the kernel's VmHWM, reset (/proc/self/clear_refs) before the phase
measured, so a training peak is that of the steps alone, data and model already built.

1. Data: the synthetic log with every item in it (`tf_skiprec.experiments.large_catalog.large_catalog_data`: 300
   users, ~1.5 interactions per item); the id map is built from it.
2. Training step: the NextItNet+ backbone (`--channels` x `--blocks`, histories of `--max_len`,
   batch `--batch_size`, Adam) with the full softmax and with the sampled softmax
   (`--num_sampled` log-uniform negatives), each in its own process; median step time after two
   warm-up steps (one call of the trainer's traced loop per step, which takes its batch from a
   prefetched iterator inside the call; results before the trainer's loop timed the step alone),
   and the peak. Where the full softmax's [positions, items] logits would pass
   `--full_logits_budget` entries, it runs at the batch that fits and at half of it, the sampled
   softmax also at that batch (for the ratio), and the full batch's time and peak are
   extrapolated linearly in positions. At the largest catalogue, the sampled softmax also with
   plain SGD and with a tied softmax: what is left that grows with the items on every step
   (Adam's dense moment updates; the untied [C, V] softmax kernel's transposes and dense
   gradient).
3. Evaluation (its own process, untrained model): full ranking of the target over every item for
   `--eval_users` users, in batches the pipeline bounds (tf_skiprec.data.pipeline.
   MAX_EVAL_SCORES), and where that bound lowers the batch, at the batch of 256 as before it;
   ms per user and the process's peak. Also the data: generating the log, building the
   sequences and the id map, writing and reading id_map.json.
4. Export and serving: a SkipRec model (random weights, policy included) exported with
   tf_skiprec.export.exporter (its check included) and its size; then, in a fresh process, loaded as TF
   Serving loads it (tf_skiprec.export.runner) and timed: serving_default and full top-10 at
   B = 1 and B = 64, median of `--reps` calls.
Prints the tables and writes JSON to bench/results/large_catalog/.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from absl import app, flags

from large_catalog_report import estimate_full, label, print_tables  # noqa: E402  (bench/)
from ml100k_common import REPO, in_fresh_process, write_results  # noqa: E402  (bench/)

ITEMS = flags.DEFINE_list("num_items", ["10000", "100000", "1000000"], "Catalogue sizes.")
CHANNELS = flags.DEFINE_integer("channels", 64, "Channels (the embedding and softmax width).")
BLOCKS = flags.DEFINE_integer("blocks", 4, "Residual blocks.")
MAX_LEN = flags.DEFINE_integer("max_len", 50, "History window.")
BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch (sequences).")
SAMPLED = flags.DEFINE_integer("num_sampled", 1000, "Negatives of the sampled softmax.")
STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps per row (3 where a step is slow).")
BUDGET = flags.DEFINE_float("full_logits_budget", 4e8, "Largest [positions, items] logit matrix "
                            "the full softmax is run with (entries); 4e8 is 1.6 GB of float32, a "
                            "4.8 GB peak at 1M items.")
EVAL_USERS = flags.DEFINE_integer("eval_users", 300, "Users ranked in the evaluation timing.")
REPS = flags.DEFINE_integer("reps", 30, "Calls per serving configuration (B = 64: a third).")
INTRA = flags.DEFINE_integer("intra_op_threads", 0, "Serving threads per op; 0 = TF's default.")
INTER = flags.DEFINE_integer("inter_op_threads", 0, "Serving ops at once; 0 = TF's default.")
QUICK = flags.DEFINE_bool("quick", False, "10k and 100k items, 3 steps, few calls.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "large_catalog"),
                          "Directory of the JSON.")


def _memory(field: str = "VmHWM") -> float:
  """This process's peak (VmHWM) or current (VmRSS) resident memory, MB."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _reset_peak() -> None:
  """VmHWM := VmRSS (Linux >= 4.0)."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _quiet():
  import tf_skiprec  # noqa: F401, PLC0415  (Keras 2 before TensorFlow)
  from absl import logging  # noqa: PLC0415
  logging.set_verbosity(logging.WARNING)


def _build(num_items: int, loss: str, batch: int, tied: bool, channels: int, blocks: int,
           max_len: int, num_sampled: int):
  """Child process only: (row with the data figures, config, SequenceData, model)."""
  _quiet()
  import tf_keras as keras  # noqa: PLC0415

  from tf_skiprec.config import Config, ModelConfig  # noqa: PLC0415
  from tf_skiprec.experiments.large_catalog import large_catalog_data  # noqa: PLC0415
  from tf_skiprec.data import synthetic  # noqa: PLC0415
  from tf_skiprec.data.idmap import IdMap  # noqa: PLC0415
  from tf_skiprec.data.splits import build_sequences  # noqa: PLC0415
  from tf_skiprec.training import builders  # noqa: PLC0415

  row = {"num_items": num_items, "loss": loss, "batch": batch, "tied": tied}
  config = Config()
  config.data.synthetic = large_catalog_data(num_items)
  config.data.max_len = max_len
  config.model = ModelConfig(channels=channels, num_blocks=blocks, tie_embeddings=tied)
  config.train.loss, config.train.num_sampled, config.train.batch_size = loss, num_sampled, batch
  start = time.perf_counter()
  log = synthetic.generate(config.data.synthetic)
  row["generate_s"] = time.perf_counter() - start
  start = time.perf_counter()
  data = build_sequences(log)
  row["build_s"] = time.perf_counter() - start  # sort, id map (from_items + encode)
  row["interactions"], row["items_in_log"] = len(log), data.id_map.num_items
  del log
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "id_map.json")
    start = time.perf_counter()
    data.id_map.save(path)
    row["id_map_save_s"] = time.perf_counter() - start
    row["id_map_mb"] = os.path.getsize(path) / 2**20
    start = time.perf_counter()
    IdMap.load(path)
    row["id_map_load_s"] = time.perf_counter() - start
  keras.utils.set_random_seed(0)
  model = builders.build_model(config, data.id_map.vocab_size)
  row["params_m"] = sum(int(v.shape.num_elements()) for v in model.trainable_variables) / 1e6
  return row, config, data, model


def train_row(num_items: int, loss: str, batch: int, optimizer: str, tied: bool, channels: int,
              blocks: int, max_len: int, num_sampled: int, steps: int) -> dict:
  """Child process only: data and model, then 2 + `steps` training steps (the first two not
  timed); the peak is that of the steps (tracing included)."""
  row, config, data, model = _build(num_items, loss, batch, tied, channels, blocks, max_len,
                                    num_sampled)
  import tensorflow as tf  # noqa: PLC0415
  import tf_keras as keras  # noqa: PLC0415

  from tf_skiprec.data.pipeline import Pipelines  # noqa: PLC0415
  from tf_skiprec.data.splits import train_windows  # noqa: PLC0415
  from tf_skiprec.training import builders  # noqa: PLC0415
  from tf_skiprec.training.steps import make_train_loop  # noqa: PLC0415

  row["optimizer"] = optimizer
  windows = train_windows(data, max_len)
  pipelines = Pipelines(data, max_len)
  if optimizer == "adam":
    optimizers = builders.make_optimizers(model, config.train, config.policy.learning_rate)
  else:
    optimizers = {"backbone": keras.optimizers.SGD(config.train.learning_rate)}
    optimizers["backbone"].build(model.trainable_variables)
  counter = tf.Variable(0, dtype=tf.int64)
  loop = make_train_loop(model, optimizers, tf.distribute.get_strategy(), counter, seed=0,
                         mode="pretrain")
  per_epoch = len(windows) // batch                     # full batches (10k items: ~5 an epoch)
  epochs = -(-(2 + steps) // max(per_epoch, 1))
  dataset = pipelines.train(windows, batch, seed=0, epoch=0, drop_remainder=True)
  for epoch in range(1, epochs):
    dataset = dataset.concatenate(pipelines.train(windows, batch, seed=0, epoch=epoch,
                                                  drop_remainder=True))
  batches, examples = iter(dataset), iter(dataset)      # the loop's, and the same to count
  row["setup_rss_mb"] = _memory("VmRSS")
  _reset_peak()
  times, positions = [], []
  one = tf.constant(1, tf.int64)
  for _ in range(2 + steps):
    example = next(examples)
    positions.append(int(tf.reduce_sum(tf.cast(
        tf.logical_and(example["labels"] > 0, example["inputs"] > 0), tf.int32))))
    begin = time.perf_counter()
    out = loop(batches, one)                            # one step per call: its own time
    float(out["means"]["loss"].numpy())
    times.append(time.perf_counter() - begin)
  row["step_ms"] = 1000 * statistics.median(times[2:])
  row["first_step_s"] = times[0]  # tracing included
  row["positions"] = statistics.median(positions)
  row["train_peak_mb"] = _memory()
  return row


def eval_row(num_items: int, channels: int, blocks: int, max_len: int, users: int,
             bounded: bool = True) -> dict:
  """Child process only: data and model (untrained), then the evaluation of `users` users twice:
  the peak over both, the time of the second (the first traces). `bounded=False`: the batch of
  256 whatever the catalogue, as before the pipeline bounded it."""
  row, _, data, model = _build(num_items, "full", 0, False, channels, blocks, max_len, 0)
  import tensorflow as tf  # noqa: PLC0415

  from tf_skiprec.data import pipeline  # noqa: PLC0415
  from tf_skiprec.data.pipeline import Pipelines  # noqa: PLC0415
  from tf_skiprec.data.splits import Windows, eval_windows  # noqa: PLC0415
  from tf_skiprec.training.evaluate import evaluate  # noqa: PLC0415
  from tf_skiprec.training.steps import make_eval_step  # noqa: PLC0415

  if not bounded:
    pipeline.MAX_EVAL_SCORES = 2**62
  users = min(users, data.num_users)
  valid = eval_windows(data, "valid", max_len)
  some = Windows(ends=valid.ends[:users], lengths=valid.lengths[:users],
                 targets=valid.targets[:users], users=valid.users[:users])
  pipelines, strategy = Pipelines(data, max_len), tf.distribute.get_strategy()
  step, kinds = make_eval_step(model, strategy), data.user_kinds[:users]
  before = _memory("VmRSS")
  _reset_peak()
  evaluate(step, pipelines.evaluation(some, 256), strategy, kinds)
  begin = time.perf_counter()
  evaluate(step, pipelines.evaluation(some, 256), strategy, kinds)
  row.update(eval_users=users, eval_ms_per_user=1000 * (time.perf_counter() - begin) / users,
             eval_batch=pipeline.eval_batch_size(256, data.id_map.vocab_size), bounded=bounded,
             eval_extra_mb=_memory() - before, eval_peak_mb=_memory())
  return row


def export_row(num_items: int, channels: int, blocks: int, max_len: int, base: str) -> dict:
  """Child process only: a SkipRec model with random weights exported (and checked)."""
  _quiet()
  import numpy as np  # noqa: PLC0415

  from tf_skiprec.config import Config  # noqa: PLC0415
  from tf_skiprec.data.idmap import IdMap  # noqa: PLC0415
  from tf_skiprec.export.exporter import export_model  # noqa: PLC0415
  from tf_skiprec.training import builders  # noqa: PLC0415

  config = Config()
  config.train.mode = "gumbel"
  config.model.num_blocks, config.model.channels, config.data.max_len = blocks, channels, max_len
  model = builders.build_model(config, vocab_size=num_items + 1)
  rng = np.random.default_rng(0)
  for block in model.backbone.blocks:  # blocks that do something, a policy that varies by user
    block.alpha.assign(0.1)
  norm, head = model.policy.norm, model.policy.head
  norm.moving_variance.assign(np.full(norm.moving_variance.shape, 1e-4, np.float32))
  head.kernel.assign(rng.normal(0.0, 1.0, head.kernel.shape).astype(np.float32))
  id_map = IdMap(_raw_ids(np.arange(1, num_items + 1)), np.arange(num_items, 0, -1))
  _reset_peak()
  start = time.perf_counter()
  export = export_model(model, id_map, threshold=0.5, base_dir=base, model_name=f"items_{num_items}",
                        max_len=max_len, sample_histories=_histories(16, num_items, max_len))
  seconds = time.perf_counter() - start
  files = [os.path.join(d, f) for d, _, fs in os.walk(export["path"]) for f in fs]
  variables = [f for f in files if os.sep + "variables" + os.sep in f]
  return {"num_items": num_items, "path": export["path"], "export_s": seconds,
          "export_mb": sum(map(os.path.getsize, files)) / 2**20,
          "variables_mb": sum(map(os.path.getsize, variables)) / 2**20,
          "export_peak_mb": _memory()}


def serve_row(path: str, num_items: int, max_len: int, reps: int, intra: int, inter: int) -> dict:
  """Child process only: load the export as TF Serving does and time top-10 requests."""
  _quiet()
  import numpy as np  # noqa: PLC0415

  from tf_skiprec.export.runner import SavedModelRunner  # noqa: PLC0415

  dense = _histories(256, num_items, max_len)
  raw = np.where(dense > 0, _raw_ids(np.maximum(dense, 1)), "").astype(object)
  raw = np.vectorize(str.encode, otypes=[object])(raw)                  # what a client sends
  base_mb = _memory("VmRSS")
  _reset_peak()
  start = time.perf_counter()
  runner = SavedModelRunner(path, intra_op_threads=intra, inter_op_threads=inter)
  prob = runner.run({"history": raw[:64]}, "decisions")["keep_probability"]
  row = {"num_items": num_items, "load_s": time.perf_counter() - start,
         "loaded_mb": _memory("VmRSS") - base_mb}
  half = float(np.quantile(prob, 0.5))  # a policy running ~half the blocks
  for batch, calls in ((1, reps), (64, max(3, reps // 3))):
    for name, run in (("serving_default", lambda g: runner.run(
        {"history": raw[g], "threshold": np.array([half], np.float32)})),
                      ("full", lambda g: runner.run({"history": raw[g]}, "full"))):
      times = []
      for r in range(calls + 2):
        rows = slice((r * batch) % 256, (r * batch) % 256 + batch)
        begin = time.perf_counter()
        run(rows)
        if r >= 2:  # the first calls warm up
          times.append(time.perf_counter() - begin)
      row[f"{name}_b{batch}_ms"] = 1000 * statistics.median(times)
  row["serving_peak_mb"] = _memory()  # the Python and TensorFlow runtime included
  runner.close()
  return row


def _raw_ids(dense):
  """Raw id of dense ids (numpy array, >= 1): "i<dense - 1>"."""
  import numpy as np  # noqa: PLC0415
  return np.char.add("i", (dense - 1).astype(str))


def _histories(num_users: int, num_items: int, max_len: int):
  """[U, max_len] dense histories, lengths uniform in 5..max_len, left-padded."""
  import numpy as np  # noqa: PLC0415
  rng = np.random.default_rng(1)
  ids = rng.integers(1, num_items + 1, size=(num_users, max_len)).astype(np.int32)
  ids[np.arange(max_len)[None, :] < max_len - rng.integers(5, max_len + 1, num_users)[:, None]] = 0
  return ids


def main(argv):
  del argv
  items = [int(n) for n in ITEMS.value]
  steps, reps, eval_users = STEPS.value, REPS.value, EVAL_USERS.value
  if QUICK.value:
    items, steps, reps = [n for n in items if n <= 100_000] or items[:1], 3, 6
  shape = (CHANNELS.value, BLOCKS.value, MAX_LEN.value)
  started, load_before = time.perf_counter(), os.getloadavg()
  train, evals = [], []
  for n in items:
    evals.append(in_fresh_process(eval_row, n, *shape, eval_users))
    if evals[-1]["eval_batch"] < 256:  # what the bound saves
      evals.append(in_fresh_process(eval_row, n, *shape, eval_users, False))
    full_batch = max(1, min(BATCH.value, int(BUDGET.value // (MAX_LEN.value * (n + 1)))))
    runs = [("sampled", BATCH.value, "adam", False), ("full", full_batch, "adam", False)]
    if full_batch < BATCH.value:  # the full softmax's slope per position, and the matched ratio
      runs += [("full", max(1, full_batch // 2), "adam", False),
               ("sampled", full_batch, "adam", False)]
    if n == max(items):  # what is left of O(V * C) per step: Adam's moments, the untied softmax
      runs += [("sampled", BATCH.value, "sgd", False), ("sampled", BATCH.value, "adam", True),
               ("sampled", BATCH.value, "sgd", True)]
    for loss, batch, optimizer, tied in runs:
      slow = loss == "full" and batch < BATCH.value
      row = in_fresh_process(train_row, n, loss, batch, optimizer, tied, *shape, SAMPLED.value,
                             3 if slow else steps)
      train.append(row)
      print(f"{n:>9,} items  {label(row):<22} batch {batch:>3}: step {row['step_ms']:8.1f} ms, "
            f"peak {row['train_peak_mb'] / 1024:5.2f} GB", flush=True)
  estimates = estimate_full(train, BATCH.value)

  base = tempfile.mkdtemp(prefix="large_catalog_")
  serving = []
  try:
    for n in items:
      exported = in_fresh_process(export_row, n, *shape[:2], MAX_LEN.value, base)
      timed = in_fresh_process(serve_row, exported["path"], n, MAX_LEN.value, reps, INTRA.value,
                               INTER.value)
      serving.append({**exported, **timed})
      print(f"{n:>9,} items  export {exported['export_s']:.1f} s, {exported['export_mb']:.0f} MB;"
            f" B=1 {timed['serving_default_b1_ms']:.1f} ms, B=64 "
            f"{timed['serving_default_b64_ms']:.1f} ms", flush=True)
      shutil.rmtree(os.path.dirname(exported["path"]), ignore_errors=True)
  finally:
    shutil.rmtree(base, ignore_errors=True)
  print_tables(train, estimates, evals, serving, shape, SAMPLED.value)
  total = time.perf_counter() - started
  print(f"\nTotal {total:.0f} s.")
  path = write_results(OUT.value, "large_catalog", QUICK.value, {
      "channels": shape[0], "blocks": shape[1], "max_len": shape[2], "batch_size": BATCH.value,
      "num_sampled": SAMPLED.value, "full_logits_budget": BUDGET.value, "train": train,
      "evaluation": evals, "full_softmax_estimates": estimates, "serving": serving,
      "total_seconds": total, "intra_op_threads": INTRA.value, "inter_op_threads": INTER.value,
      "load_average_before_after": [load_before, os.getloadavg()]})
  print(f"Results written to {path}")


if __name__ == "__main__":
  app.run(main)
