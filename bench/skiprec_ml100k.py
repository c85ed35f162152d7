"""SkipRec benchmark on ML-100k: NextItNet+ backbones with a layer-skipping policy against the
full backbones they start from.

  .venv/bin/python bench/skiprec_ml100k.py                  # every variant x 3 seeds: ~4.5 h
  .venv/bin/python bench/skiprec_ml100k.py --quick          # 1 seed, 1 epoch per stage
  .venv/bin/python bench/skiprec_ml100k.py --variants full10_sd,gumbel40_10_sd --seeds 0 \
      --workdir /tmp/skiprec --data /path/to/ml-100k

Variants (bench/ml100k_variants.py): the full backbones `full10` and `full32` (experiments
`ml100k_10`, `ml100k_32` of tf_skiprec/experiments/ml100k.py) and the same with stochastic depth in pretraining
(`model.block_drop`: `full10_sd10`, `full10_sd` (0.2), `full10_sd30`, `full32_sd`); SkipRec-Gumbel
at budgets 0.75/0.5/0.3 and SkipRec-RL on the 32-block backbone (the issue's list), and at
budgets 0.5/0.4/0.3 on the 10-block backbones (`gumbel40_10`, `gumbel40_10_sd`, ...). Each SkipRec
variant fine-tunes backbone + policy from its pretrain variant's best checkpoint
(`train.init_from`) with `tf_skiprec.experiments.ml100k.skiprec_finetune`: the backbone at a tenth of its
pretraining learning rate, the usage target falling from 1 to the budget over ~2 epochs, the
entropy term rising over ~5, up to 10 epochs with patience 4; rl has no budget (its reward trades
accuracy for usage).

Cost on this project's 2-core CPU machine, per seed (measured): a 10-block pretrain 2-5 min, a
32-block one 7-16 min, a 10-block fine-tune ~1.5-2 min, a 32-block one 3-5 min (each ends with a
validation sweep over the keep thresholds).

Protocol: docs/method.md §5 (chronological leave-one-out, history of at most 50 items, full ranking, no
history masking, model selected on validation NDCG@10; for Gumbel, epochs whose validation usage
is within the budget + policy.budget_slack rank first). Every run calls
`tf_skiprec.training.run(config, workdir)` in its own spawned process, so the peak memory
(ru_maxrss) read there is that run's alone.

Prints a line per run, then a markdown table (mean ± std over seeds) and the acceptance check:
the bar is the best full backbone by mean test NDCG@10; the SkipRec variant that answers it is
chosen on validation NDCG@10 among those at budget ≤ 0.5 that run at most half the blocks.
Writes everything as JSON to bench/out/ (gitignored).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from absl import app, flags

from ml100k_common import (DEFAULT_DATA, REPO, in_fresh_process, int_list, mean_std,  # noqa: E402
                           measured_run, ml100k_config, resolve_data,
                           write_results)  # noqa: E402  (bench/)

RESULT_FILE = "bench_result.json"  # in each run's work directory once it has finished


from ml100k_variants import FULL, LOW_BUDGET, VARIANTS  # noqa: E402  (bench/)


DATA = flags.DEFINE_string(
    "data", DEFAULT_DATA, "ML-100k in RecBole's atomic format (a directory holding "
    "ml-100k.inter). A relative path is looked up from the current directory, then from the "
    "repository.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (train.seed), comma-separated.")
VARIANTS_FLAG = flags.DEFINE_list(
    "variants", [name for name, v in VARIANTS.items() if v.backbone == "nextitnet"],
    f"Variants, among {list(VARIANTS)}. Default: the NextItNet+ ones (bench/sasrec_ml100k.py: "
    "the SASRec ones).")
WORKDIR = flags.DEFINE_string(
    "workdir", None, "Parent of the work directories, <workdir>/<seed>/<variant> (full32 in "
    "<seed>/full). Run again with the same --workdir to continue an interrupted benchmark: "
    "finished runs are read back (their " + RESULT_FILE + "), an unfinished one resumes from "
    "its checkpoint. SkipRec variants without their pretrain variant reuse an existing one. "
    "Default: a temporary directory, removed at the end.")
QUICK = flags.DEFINE_bool("quick", False, "Sanity check: the first seed only, 1 epoch per stage.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "out"), "Directory of the JSON result.")


def train_one(variant: str, seed: int, data_dir: str, workdir: str, init_from: str,
              quick: bool) -> dict:
  """Child process: one `run()`; returns its result with wall time, config and peak memory."""
  v = VARIANTS[variant]
  mode, budget = v.mode, v.budget
  config = ml100k_config(v.experiment, data_dir, seed)
  for assignment in v.overrides:
    config.override(assignment)
  if mode != "pretrain":
    from tf_skiprec.compute import budget_for_usage
    from tf_skiprec.experiments.ml100k import skiprec_finetune
    # lr / 10, 10 epochs, budget annealing, entropy ramp
    skiprec_finetune(config, budget if mode == "gumbel" else None, mode)
    config.train.init_from = init_from
    for assignment in v.overrides:  # again: skiprec_finetune sets some of the same fields
      config.override(assignment)
    if budget is not None:          # the blocks' usage + the policy's own share of the compute
      config.policy.budget = budget_for_usage(config, budget)
  elif init_from:                   # a pretrain variant grown from a shallower one
    config.train.grow_from = init_from
  if quick:
    config.train.epochs = 1
  return measured_run(config, workdir, seed=seed, variant=variant)


def run_line(r: dict) -> str:
  b = r["test_blocks"]
  return (f"{r['variant']:<8} seed {r['seed']}: test NDCG@10 {r['test']['NDCG@10']:.4f} "
          f"HR@10 {r['test']['HR@10']:.4f} MRR@10 {r['test']['MRR@10']:.4f} "
          f"(valid NDCG@10 {r['valid']['NDCG@10']:.4f}); blocks {b['mean']:.1f}/{b['num_blocks']} "
          f"(min {b['min']}, max {b['max']}, {b['distinct_policies']} distinct policies); "
          f"best epoch {r['best_epoch']}/{r['epochs_run']}, {r['seconds_to_best']:.0f} s to best, "
          f"{r['train_seconds']:.0f} s training, {r['wall_seconds']:.0f} s wall; "
          f"peak {r['peak_mb']:.0f} MB")


def summarise(runs: list[dict]) -> dict:
  """Per-variant means and standard deviations over the seeds."""
  ms = mean_std
  out = {"seeds": [r["seed"] for r in runs], "num_blocks": runs[0]["test_blocks"]["num_blocks"]}
  for split in ("test", "valid"):
    out[split] = {m: ms([r[split][m] for r in runs]) for m in runs[0][split]}
  out["mean_blocks"] = ms([r["test_blocks"]["mean"] for r in runs])
  out["usage"] = ms([r["test_blocks"]["usage"] for r in runs])
  for key in ("seconds_to_best", "train_seconds", "wall_seconds", "peak_mb", "best_epoch",
              "epochs_run"):
    out[key] = ms([float(r[key]) for r in runs])
  return out


def _pm(value: tuple[float, float], fmt: str) -> str:
  return f"{value[0]:{fmt}} ± {value[1]:{fmt}}"


def markdown_table(summaries: dict[str, dict]) -> str:
  cols = ["variant", "test NDCG@10", "HR@10", "MRR@10", "mean executed blocks (of N)",
          "valid NDCG@10", "s training"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for variant, s in summaries.items():
    n = len(s["seeds"])
    t = s["test"]
    lines.append("| " + " | ".join([
        f"{variant} ({n} seed{'' if n == 1 else 's'})", _pm(t["NDCG@10"], ".4f"),
        _pm(t["HR@10"], ".4f"), _pm(t["MRR@10"], ".4f"),
        f"{_pm(s['mean_blocks'], '.1f')} (of {s['num_blocks']})",
        _pm(s["valid"]["NDCG@10"], ".4f"), _pm(s["train_seconds"], ".0f")]) + " |")
  return "\n".join(lines)


def comparison(summaries: dict[str, dict], runs: dict[str, list[dict]]) -> str:
  """The acceptance check, printed only.

  The bar is the best full backbone by mean test NDCG@10 (the hardest bar). The SkipRec variant
  that answers it is chosen on validation, among those at budget <= 0.5 that run at most half the
  blocks on test; every such variant is also listed against the bar.
  """
  test = lambda v: summaries[v]["test"]["NDCG@10"][0]  # noqa: E731
  valid = lambda v: summaries[v]["valid"]["NDCG@10"][0]  # noqa: E731
  half = lambda v: summaries[v]["mean_blocks"][0] <= summaries[v]["num_blocks"] / 2  # noqa: E731
  full = [v for v in FULL if v in summaries]
  skip = [v for v in LOW_BUDGET if v in summaries and half(v)]
  if not full or not skip:
    return ("Comparison skipped: it needs a full backbone and a SkipRec variant at budget ≤ 0.5 "
            "that runs at most half the blocks among the variants.")
  bar = max(full, key=test)
  chosen = max(skip, key=valid)
  per_seed = lambda v: " / ".join(f"{r['test']['NDCG@10']:.4f}" for r in runs[v])  # noqa: E731
  lines = [
      f"Best full backbone (mean test NDCG@10): {bar}, {test(bar):.4f} (per seed {per_seed(bar)}).",
      f"SkipRec at budget ≤ 0.5 running ≤ half the blocks, chosen on validation NDCG@10: {chosen} "
      f"(valid {valid(chosen):.4f}; test {test(chosen):.4f}, per seed {per_seed(chosen)}; "
      f"{summaries[chosen]['mean_blocks'][0]:.1f} of {summaries[chosen]['num_blocks']} blocks). "
      f"At least the best full backbone: {'yes' if test(chosen) >= test(bar) else 'no'} "
      f"({test(chosen) - test(bar):+.4f}).",
      "Every such variant against the bar: " + "; ".join(
          f"{v} {test(v):.4f} ({test(v) - test(bar):+.4f}, {summaries[v]['mean_blocks'][0]:.1f}/"
          f"{summaries[v]['num_blocks']} blocks)" for v in sorted(skip, key=test, reverse=True)),
  ]
  return "\n".join(lines)


def main(argv, name: str = "skiprec_ml100k"):
  """The benchmark; its JSON is written to --out as <name>.json."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = resolve_data(DATA.value)
  seeds = int_list("seeds", SEEDS.value, "0,1,2")
  unknown = sorted(set(VARIANTS_FLAG.value) - set(VARIANTS))
  if unknown or not VARIANTS_FLAG.value:
    raise app.UsageError(f"--variants: unknown {unknown} or empty. Fix: use some of "
                         f"{list(VARIANTS)}.")
  variants = [v for v in VARIANTS if v in VARIANTS_FLAG.value]  # pretrains before fine-tunes
  if QUICK.value:
    seeds = seeds[:1]
  parent = WORKDIR.value or tempfile.mkdtemp(prefix="skiprec_ml100k_")
  os.makedirs(parent, exist_ok=True)
  for seed in seeds:
    for base in {VARIANTS[v].base for v in variants} - {None} - set(variants):
      full = os.path.join(parent, str(seed), VARIANTS[base].subdir)
      if not os.path.isfile(os.path.join(full, "metrics.json")):
        raise app.UsageError(f"some SkipRec variants start from {full}, which holds no finished "
                             f"pretrain run. Fix: add {base} to --variants.")
  print(f"data {data_dir}; variants {variants}; seeds {seeds}; work directories under {parent}"
        + ("; quick (1 epoch per stage)" if QUICK.value else ""), flush=True)

  started = time.perf_counter()
  runs: dict[str, list[dict]] = {}
  for seed in seeds:
    for variant in variants:
      workdir = os.path.join(parent, str(seed), VARIANTS[variant].subdir)
      base = VARIANTS[variant].base
      init_from = os.path.join(parent, str(seed), VARIANTS[base].subdir) if base else ""
      done = os.path.join(workdir, RESULT_FILE)
      if os.path.isfile(done):  # finished by an earlier invocation with this --workdir
        with open(done) as f:
          result = json.load(f)
      else:
        result = in_fresh_process(train_one, variant, seed, data_dir, workdir, init_from,
                                  QUICK.value)
        with open(done + ".tmp", "w") as f:
          json.dump(result, f)
        os.replace(done + ".tmp", done)
      runs.setdefault(variant, []).append(result)
      print(run_line(result), flush=True)
  total = time.perf_counter() - started

  summaries = {v: summarise(runs[v]) for v in variants}
  print("\nTest metrics and executed blocks, mean ± std over seeds:\n")
  print(markdown_table(summaries))
  print("\n" + comparison(summaries, runs))
  print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min).")

  path = write_results(OUT.value, name, QUICK.value, {
      "data": data_dir, "seeds": seeds, "variants": variants, "total_seconds": total,
      "comparison": comparison(summaries, runs), "summary": summaries, "runs": runs})
  print(f"Results written to {path}")
  if not WORKDIR.value:
    shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
