"""SkipRec on the default graded synthetic data (`make train`'s), 3 seeds: the full backbone, a
full backbone of SkipRec's mean cost, SkipRec-Gumbel and SkipRec-RL.

  .venv/bin/python bench/skiprec_synthetic.py                       # 3 seeds x 4 variants
  .venv/bin/python bench/skiprec_synthetic.py --seeds 0 --workdir /tmp/sks   # resumable
  .venv/bin/python bench/skiprec_synthetic.py --quick               # 1 seed, 1 epoch per stage

Per seed (train.seed; the data are the same log):
  full        the `default` experiment's pretrain stage: the backbone with every block;
  gumbel      the `default` experiment (that pretrain, then SkipRec-Gumbel), as `make train`
              (its wall time is both stages', without the export);
  rl          the `default_rl` experiment from the same pretrained backbone (train.init_from);
  equal_cost  a full backbone with as many blocks as SkipRec-Gumbel runs on average (rounded
              up: a cost at least SkipRec's blocks, the policy not counted), pretrained with the
              same recipe.

Reports test NDCG@10 overall and by group, mean executed blocks overall and by group beside each
group's minimum (backbone.blocks_to_reach), and the acceptance checks of issue 14. Writes
bench/results/skiprec_synthetic/summary.json: a list of rows {seed, variant, test_ndcg10, usage,
blocks_by_group, ...} (groups in order of need, shallowest first), the per-variant mean ± std
and the checks. Every run is a `run()` in its own spawned process.
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import app, flags

from ml100k_common import REPO, in_fresh_process, int_list, mean_std  # noqa: E402  (bench/)

VARIANTS = ("full", "gumbel", "rl", "equal_cost")  # in dependency order
RESULT_FILE = "bench_result.json"

SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (train.seed), comma-separated.")
VARIANTS_FLAG = flags.DEFINE_list("variants", list(VARIANTS), f"Some of {list(VARIANTS)}.")
WORKDIR = flags.DEFINE_string(
    "workdir", "/tmp/skiprec_synthetic", "Parent of the work directories <workdir>/<seed>/...; "
    "run again with the same --workdir to continue (finished runs are read back).")
QUICK = flags.DEFINE_bool("quick", False, "Sanity check: the first seed, 1 epoch per stage.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "skiprec_synthetic"),
                          "Directory of summary.json.")


def train_one(variant: str, seed: int, workdir: str, init_from: str, num_blocks: int,
              quick: bool) -> dict:
  """Child process: one `run()` of the variant; returns its result (+ wall time)."""
  import tf_skiprec  # noqa: F401  (Keras 2 before TensorFlow loads)
  from absl import logging
  from tensorflow.python.platform import tf_logging

  from tf_skiprec.experiments import get_config
  from tf_skiprec.training import run

  logging.set_verbosity(logging.WARNING)
  tf_logging.get_logger().setLevel("ERROR")
  config = get_config("default_rl" if variant == "rl" else "default")
  config.train.seed = seed
  config.runtime.progress = False
  config.export.base_dir = ""
  if variant == "rl":
    config.train.init_from, config.train.pretrain_epochs = init_from, 0
  if variant == "equal_cost":
    pretrain_epochs = config.train.pretrain_epochs
    config.train.mode, config.train.epochs = "pretrain", pretrain_epochs
    config.train.window_stride = config.train.pretrain_window_stride  # as the full backbone
    config.model.num_blocks = num_blocks
  if quick:
    config.train.epochs = 1
    config.train.pretrain_epochs = min(config.train.pretrain_epochs, 1)
  start = time.perf_counter()
  result = run(config, workdir)
  result["wall_seconds"] = time.perf_counter() - start
  return result


def row(variant: str, seed: int, result: dict) -> dict:
  """The summary row of one run (groups in order of need: their names sort so)."""
  blocks = result["test_blocks"]
  groups = sorted(result.get("test_by_kind", {}))
  return {
      "seed": seed, "variant": variant,
      "test_ndcg10": result["test"]["NDCG@10"], "valid_ndcg10": result["valid"]["NDCG@10"],
      "test_hr10": result["test"]["HR@10"],
      "usage": blocks["usage"], "mean_blocks": blocks["mean"], "num_blocks": blocks["num_blocks"],
      "blocks_by_group": {g: blocks["by_kind"][g] for g in groups},
      "ndcg10_by_group": {g: result["test_by_kind"][g]["NDCG@10"] for g in groups},
      "min_blocks_by_group": result.get("min_blocks_by_kind", {}),
      "selection_rule": result.get("selection_rule", ""),
      "best_epoch": result["best_epoch"], "train_seconds": result["train_seconds"],
      "wall_seconds": result.get("wall_seconds", 0.0),
  }


def checks(rows: list[dict]) -> list[str]:
  """Issue 14's acceptance on this data, seed by seed."""
  by = {(r["seed"], r["variant"]): r for r in rows}
  out = []
  for seed in sorted({r["seed"] for r in rows}):
    full, gumbel = by.get((seed, "full")), by.get((seed, "gumbel"))
    equal, rl = by.get((seed, "equal_cost")), by.get((seed, "rl"))
    if full and gumbel:
      g = list(gumbel["blocks_by_group"].values())
      rising = all(a <= b for a, b in zip(g, g[1:]))
      ratio = g[-1] / max(g[0], 1e-9)
      out.append(
          f"seed {seed} gumbel: usage {gumbel['usage']:.3f} (<= 0.25: "
          f"{_yes(gumbel['usage'] <= 0.25)}); NDCG@10 {gumbel['test_ndcg10']:.4f} = "
          f"{gumbel['test_ndcg10'] / full['test_ndcg10']:.3f} x full {full['test_ndcg10']:.4f} "
          f"(>= 0.97: {_yes(gumbel['test_ndcg10'] >= 0.97 * full['test_ndcg10'])}); "
          + (f"equal-cost {equal['test_ndcg10']:.4f} ({equal['num_blocks']} blocks; above: "
             f"{_yes(gumbel['test_ndcg10'] > equal['test_ndcg10'])}); " if equal else "")
          + f"blocks by group {' / '.join(f'{b:.2f}' for b in g)} (rising: {_yes(rising)}; "
          f"deepest / shallowest {ratio:.1f} >= 3: {_yes(ratio >= 3)})")
    if gumbel and rl:
      out.append(f"seed {seed} rl: usage {rl['usage']:.3f} (<= 0.5: {_yes(rl['usage'] <= 0.5)}); "
                 f"NDCG@10 {rl['test_ndcg10']:.4f}, {rl['test_ndcg10'] - gumbel['test_ndcg10']:+.4f} "
                 f"against gumbel (>= -0.02: "
                 f"{_yes(rl['test_ndcg10'] >= gumbel['test_ndcg10'] - 0.02)})")
  return out


def _write(path: str, result: dict) -> None:
  """A finished run's result, atomically (read back by a later invocation)."""
  with open(path + ".tmp", "w") as f:
    json.dump(result, f)
  os.replace(path + ".tmp", path)


def _yes(ok: bool) -> str:
  return "yes" if ok else "NO"


def table(rows: list[dict]) -> str:
  """Markdown: per variant, mean ± std over seeds of NDCG@10 and blocks, overall and by group."""
  groups = list(rows[0]["blocks_by_group"])
  minimum = rows[0]["min_blocks_by_group"] or next(
      (r["min_blocks_by_group"] for r in rows if r["min_blocks_by_group"]), {})
  head = (["variant", "seeds", "test NDCG@10", "usage", "mean blocks"]
          + [f"NDCG@10 {g}" for g in groups] + [f"blocks {g} (min {minimum.get(g, '?')})"
                                                for g in groups])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for variant in VARIANTS:
    rs = [r for r in rows if r["variant"] == variant]
    if not rs:
      continue
    pm = lambda values, f: "{:{f}} ± {:{f}}".format(*mean_std(values), f=f)  # noqa: E731
    cells = [variant, str(len(rs)), pm([r["test_ndcg10"] for r in rs], ".4f"),
             pm([r["usage"] for r in rs], ".3f"),
             pm([r["mean_blocks"] for r in rs], ".2f") + f" of {rs[0]['num_blocks']}"]
    cells += [pm([r["ndcg10_by_group"][g] for r in rs], ".3f") for g in groups]
    cells += [pm([r["blocks_by_group"][g] for r in rs], ".2f") for g in groups]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  seeds = int_list("seeds", SEEDS.value, "0,1,2")[:1 if QUICK.value else None]
  unknown = sorted(set(VARIANTS_FLAG.value) - set(VARIANTS))
  if unknown or not VARIANTS_FLAG.value:
    raise app.UsageError(f"--variants: unknown {unknown} or empty. Fix: use some of {VARIANTS}.")
  wanted = [v for v in VARIANTS if v in VARIANTS_FLAG.value]
  started = time.perf_counter()
  rows = []
  for seed in seeds:
    base = os.path.join(WORKDIR.value, str(seed))
    results = {}
    for variant in wanted:
      workdir = os.path.join(base, "gumbel" if variant in ("full", "gumbel") else variant)
      if variant == "full":   # the gumbel run's pretrain stage
        workdir = os.path.join(workdir, "pretrain")
      done = os.path.join(workdir, RESULT_FILE)
      if os.path.isfile(done):
        with open(done) as f:
          result = json.load(f)
      else:
        if variant == "full":  # trains both stages, as make train does; keeps both results
          gumbel = in_fresh_process(train_one, "gumbel", seed, os.path.dirname(workdir), "", 0,
                                    QUICK.value)
          _write(os.path.join(os.path.dirname(workdir), RESULT_FILE), gumbel)
          with open(os.path.join(workdir, "metrics.json")) as f:
            result = json.load(f)
        else:
          gumbel_blocks = results["gumbel"]["test_blocks"]["mean"] if "gumbel" in results else 0
          result = in_fresh_process(
              train_one, variant, seed, workdir, os.path.join(base, "gumbel", "pretrain"),
              max(1, math.ceil(gumbel_blocks - 1e-9)), QUICK.value)
        _write(done, result)
      results[variant] = result
      rows.append(row(variant, seed, result))
      r = rows[-1]
      print(f"seed {seed} {variant:<10} test NDCG@10 {r['test_ndcg10']:.4f} usage "
            f"{r['usage']:.3f} ({r['mean_blocks']:.2f}/{r['num_blocks']}) by group "
            + ", ".join(f"{g} {b:.2f}" for g, b in r["blocks_by_group"].items())
            + f"; {r['wall_seconds']:.0f} s", flush=True)
  if "equal_cost" in wanted and "gumbel" not in wanted:
    raise app.UsageError("equal_cost needs gumbel's mean blocks. Fix: add gumbel to --variants.")
  total = time.perf_counter() - started
  text = table(rows)
  found = checks(rows)
  print("\n" + text + "\n\n" + "\n".join(found) + f"\n\nwall {total / 60:.1f} min")
  if not QUICK.value:
    os.makedirs(OUT.value, exist_ok=True)
    path = os.path.join(OUT.value, "summary.json")
    with open(path, "w") as f:
      json.dump({"command": "bench/skiprec_synthetic.py " + " ".join(argv[1:]), "seeds": seeds,
                 "rows": rows, "table": text, "checks": found, "wall_seconds": total}, f,
                indent=2)
    print(f"written {path}")


if __name__ == "__main__":
  app.run(main)
