"""Backbone benchmark on ML-100k: NextItNet+ with 10 and 32 blocks against the peer's figures.

  .venv/bin/python bench/backbone_ml100k.py                  # 2 configs x 3 seeds: about 31 min
  .venv/bin/python bench/backbone_ml100k.py --quick          # 1 seed, 2 epochs: about 2.5 min
  .venv/bin/python bench/backbone_ml100k.py --configs 10 --seeds 0,1,2 --data /path/to/ml-100k

Times measured on this project's 2-core CPU machine (shared at times with other work).

Protocol: docs/method.md §5 (chronological leave-one-out, history of at most 50 items, full ranking, no
history masking, model selected on validation NDCG@10). Every (config, seed) is trained by the
project's own `tf_skiprec.training.run(config, workdir)` with the registered experiment
`ml100k_<blocks>` (tf_skiprec/experiments/ml100k.py), in a fresh work directory and in its own spawned
process, so that the peak memory (ru_maxrss) read there after `run()` is that run's alone. The
seed sets `train.seed` (initialisation, shuffle order, dropout); the ML-100k split has no
randomness, so there is no data seed to vary.

Prints the per-run results, test HR/NDCG/MRR@{5,10,20} as mean ± std over seeds, the cost (time
to the best epoch and in all, training sequences per second, parameters, peak memory), and a
markdown table beside the peer's figures (/work/shared/PEERS.md); writes everything as JSON to
bench/out/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from absl import app, flags

from ml100k_common import (DEFAULT_DATA, REPO, in_fresh_process, int_list, mean_std,  # noqa: E402
                           measured_run, ml100k_config, resolve_data,
                           write_results)  # noqa: E402  (bench/)
KS = (5, 10, 20)
METRICS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in KS]
QUICK_EPOCHS = 2

DATA = flags.DEFINE_string(
    "data", DEFAULT_DATA, "ML-100k in RecBole's atomic format (a directory holding ml-100k.inter). "
    "A relative path is looked up from the current directory, then from the repository.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (train.seed), comma-separated.")
CONFIGS = flags.DEFINE_list("configs", ["10", "32"],
                            "Numbers of blocks; each names the experiment ml100k_<blocks>.")
WORKDIR = flags.DEFINE_string("workdir", None, "Parent of the per-run work directories (each run "
                              "gets a fresh one). Default: a temporary directory, removed at the end.")
QUICK = flags.DEFINE_bool("quick", False, f"Sanity check: the first seed only, {QUICK_EPOCHS} epochs.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "out"), "Directory of the JSON result.")

# /work/shared/PEERS.md: RecBole 1.2.1 on this machine, same protocol. None = not reported.
PEERS = {
    "RecBole NextItNet, 10 blocks (peer)": {
        "test": {"HR@5": 0.0594, "HR@10": 0.1156, "HR@20": 0.2015, "NDCG@5": 0.0377,
                 "NDCG@10": 0.0563, "NDCG@20": 0.0778, "MRR@5": 0.0307, "MRR@10": 0.0386,
                 "MRR@20": 0.0444},
        "valid_ndcg10": 0.0637, "best_epoch": 12, "epochs": 18, "seconds_to_best": 1210.0,
        "seconds_per_epoch": 100.8, "train_seconds": 1822.0, "num_params": 361472,
        "peak_mb": 1200.0},
    "RecBole SASRec, 2 layers (peer)": {
        "test": {"HR@5": 0.0785, "HR@10": 0.1326, "HR@20": 0.2312, "NDCG@5": 0.0464,
                 "NDCG@10": 0.0636, "NDCG@20": 0.0884, "MRR@5": 0.0360, "MRR@10": 0.0429,
                 "MRR@20": 0.0496},
        "valid_ndcg10": 0.0742, "best_epoch": 19, "epochs": 25, "seconds_to_best": 2290.0,
        "seconds_per_epoch": 120.7, "train_seconds": 3028.0, "num_params": 211008,
        "peak_mb": None},
}


def train_one(blocks: int, seed: int, data_dir: str, workdir: str, quick: bool) -> dict:
  """Child process: one `run()`; returns its result with wall time, config and peak memory."""
  config = ml100k_config(f"ml100k_{blocks}", data_dir, seed)
  if quick:
    config.train.epochs = QUICK_EPOCHS
  return measured_run(config, workdir, seed=seed, blocks=blocks)


def summarise(runs: list[dict]) -> dict:
  """Per-config means and standard deviations over the seeds."""
  out = {"seeds": [r["seed"] for r in runs], "test": {}, "valid": {}}
  for split in ("test", "valid"):
    for m in METRICS:
      out[split][m] = mean_std([r[split][m] for r in runs])
  for key in ("seconds_to_best", "train_seconds", "wall_seconds", "sequences_per_second",
              "peak_mb", "best_epoch", "epochs_run"):
    out[key] = mean_std([float(r[key]) for r in runs])
  out["seconds_per_epoch"] = mean_std([r["train_seconds"] / r["epochs_run"] for r in runs])
  out["num_params"] = runs[0]["num_params"]
  return out


def _seeds(n: int) -> str:
  return f"{n} seed" + ("" if n == 1 else "s")


def run_line(r: dict) -> str:
  return (f"{r['blocks']:>2} blocks, seed {r['seed']}: test NDCG@10 {r['test']['NDCG@10']:.4f} "
          f"HR@10 {r['test']['HR@10']:.4f} (valid NDCG@10 {r['valid']['NDCG@10']:.4f}); "
          f"best epoch {r['best_epoch']}/{r['epochs_run']}, {r['seconds_to_best']:.0f} s to best, "
          f"{r['train_seconds']:.0f} s training, {r['wall_seconds']:.0f} s wall; "
          f"{r['sequences_per_second']:.0f} seq/s; peak {r['peak_mb']:.0f} MB")


def metrics_table(summaries: dict[int, dict]) -> str:
  """Test metrics, mean ± std over seeds, one row per config."""
  head = f"{'model':<22} " + " ".join(f"{c:>15}" for c in METRICS)
  lines = [head, "-" * len(head)]
  for blocks, s in summaries.items():
    name = f"{blocks} blocks ({_seeds(len(s['seeds']))})"
    lines.append(f"{name:<22} " + " ".join(
        f"{s['test'][c][0]:>7.4f} ± {s['test'][c][1]:.4f}" for c in METRICS))
  return "\n".join(lines)


def _pm(value: tuple[float, float], fmt: str) -> str:
  mean, std = value
  return f"{mean:{fmt}} ± {std:{fmt}}"


def _num(value, fmt: str) -> str:
  return "—" if value is None else format(value, fmt)


def markdown_table(summaries: dict[int, dict]) -> str:
  """Ours (mean ± std over seeds) beside the peer's figures."""
  cols = ["model", "test HR@10", "test NDCG@10", "test MRR@10", "valid NDCG@10", "best epoch",
          "s to best", "s / epoch", "s training", "train seq/s", "params", "peak memory"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for name, p in PEERS.items():
    t = p["test"]
    peak = "—" if p["peak_mb"] is None else f"~{p['peak_mb'] / 1000:.1f} GB"
    lines.append("| " + " | ".join([
        name, f"{t['HR@10']:.4f}", f"{t['NDCG@10']:.4f}", f"{t['MRR@10']:.4f}",
        f"{p['valid_ndcg10']:.4f}", f"{p['best_epoch']}", f"{p['seconds_to_best']:,.0f}",
        f"{p['seconds_per_epoch']:.1f}", f"{p['train_seconds']:,.0f}", "—",
        f"{p['num_params']:,}", peak]) + " |")
  for blocks, s in summaries.items():
    t = s["test"]
    lines.append("| " + " | ".join([
        f"tf_skiprec NextItNet+, {blocks} blocks ({_seeds(len(s['seeds']))})",
        _pm(t["HR@10"], ".4f"), _pm(t["NDCG@10"], ".4f"), _pm(t["MRR@10"], ".4f"),
        _pm(s["valid"]["NDCG@10"], ".4f"), _pm(s["best_epoch"], ".1f"),
        _pm(s["seconds_to_best"], ".0f"), _pm(s["seconds_per_epoch"], ".1f"),
        _pm(s["train_seconds"], ".0f"), _pm(s["sequences_per_second"], ".0f"),
        f"{s['num_params']:,}", f"{s['peak_mb'][0] / 1000:.2f} GB"]) + " |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = resolve_data(DATA.value)
  seeds = int_list("seeds", SEEDS.value, "0,1,2")
  configs = int_list("configs", CONFIGS.value, "10,32")
  if QUICK.value:
    seeds = seeds[:1]
  parent = WORKDIR.value or tempfile.mkdtemp(prefix="backbone_ml100k_")
  os.makedirs(parent, exist_ok=True)
  for blocks in configs:
    for seed in seeds:
      workdir = os.path.join(parent, f"b{blocks}_seed{seed}")
      if os.path.exists(workdir) and os.listdir(workdir):
        raise app.UsageError(f"{workdir} is not empty, and run() would resume it. "
                             "Fix: pass a new --workdir, or remove the old one.")
  print(f"data {data_dir}; configs {configs} blocks; seeds {seeds}; work directories under {parent}"
        + (f"; quick ({QUICK_EPOCHS} epochs)" if QUICK.value else ""), flush=True)

  started = time.perf_counter()
  runs: dict[int, list[dict]] = {}
  for blocks in configs:
    for seed in seeds:
      workdir = os.path.join(parent, f"b{blocks}_seed{seed}")
      result = in_fresh_process(train_one, blocks, seed, data_dir, workdir, QUICK.value)
      runs.setdefault(blocks, []).append(result)
      print(run_line(result), flush=True)
  total = time.perf_counter() - started

  summaries = {blocks: summarise(rs) for blocks, rs in runs.items()}
  print("\nTest metrics, mean ± std over seeds:\n")
  print(metrics_table(summaries))
  print()
  for blocks, s in summaries.items():
    print(f"{blocks} blocks: {s['num_params']:,} parameters; "
          f"{_pm(s['seconds_to_best'], '.0f')} s to the best epoch "
          f"(epoch {_pm(s['best_epoch'], '.1f')}), {_pm(s['train_seconds'], '.0f')} s training "
          f"in all ({_pm(s['seconds_per_epoch'], '.1f')} s/epoch, {_pm(s['epochs_run'], '.1f')} "
          f"epochs), {_pm(s['wall_seconds'], '.0f')} s wall per run; "
          f"{_pm(s['sequences_per_second'], '.0f')} training sequences/s; "
          f"peak memory {_pm(s['peak_mb'], '.0f')} MB")
  print("\n" + markdown_table(summaries))
  print("\nPeer: RecBole trains on every prefix (about 98k samples an epoch), we on windows of "
        "51 items (every position in one pass), so the sequences/s are not comparable and are "
        "left out for the peer.")
  print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min).")

  path = write_results(OUT.value, "backbone_ml100k", QUICK.value, {
      "data": data_dir, "seeds": seeds, "configs": configs, "total_seconds": total,
      "summary": {str(b): s for b, s in summaries.items()},
      "runs": {str(b): rs for b, rs in runs.items()}, "peers": PEERS})
  print(f"Results written to {path}")
  if not WORKDIR.value:
    shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
