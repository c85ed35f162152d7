"""bench/large_catalog.py's report: the full softmax extrapolated to the standard batch, and the
Markdown tables of its rows (training step, data and evaluation, export and serving)."""

from __future__ import annotations


def label(row: dict) -> str:
  extras = [x for x, on in (("SGD", row.get("optimizer") == "sgd"), ("tied", row["tied"])) if on]
  return row["loss"] + (f" ({', '.join(extras)})" if extras else "")


def _matched(train: list[dict], row: dict, batch: int) -> dict | None:
  """The sampled, Adam, untied row of the same catalogue at `batch`."""
  return next((r for r in train if r["num_items"] == row["num_items"] and r["loss"] == "sampled"
               and r["optimizer"] == "adam" and not r["tied"] and r["batch"] == batch), None)


def estimate_full(train: list[dict], batch: int) -> list[dict]:
  """The full softmax at the standard `batch` where it could only run at lower ones: the time and
  peak of the two lower batches, extended linearly in positions per step (the [positions, items]
  logits and their gradient grow with positions; the rest does not)."""
  out = []
  for n in sorted({r["num_items"] for r in train}):
    fulls = sorted((r for r in train if r["num_items"] == n and r["loss"] == "full"
                    and r["batch"] < batch), key=lambda r: r["positions"])
    if len(fulls) < 2 or fulls[1]["positions"] == fulls[0]["positions"]:
      continue
    low, high = fulls[0], fulls[-1]
    target = _matched(train, high, batch)["positions"]
    per = {key: (high[key] - low[key]) / (high["positions"] - low["positions"])
           for key in ("step_ms", "train_peak_mb")}
    out.append({"num_items": n, "batch": batch, "positions": target,
                **{f"{key}_per_position": value for key, value in per.items()},
                **{key: high[key] + per[key] * (target - high["positions"]) for key in per}})
  return out


def print_tables(train, estimates, evals, serving, shape, num_sampled: int) -> None:
  """The Markdown tables of BUILD_NOTES.md: training step, data and evaluation, export and serving."""
  channels, blocks, max_len = shape
  print(f"\nTraining step: NextItNet+ {blocks} blocks x {channels} channels, histories of "
        f"{max_len}, Adam unless marked; sampled = {num_sampled} negatives; peak = the process's "
        "(runtime, data and model included), steps = its growth during the steps.\n")
  print("| items | softmax | batch | positions / step | params (M) | step (ms) | peak (GB) | "
        "steps (GB) | full / sampled: time | memory |\n|---|---|---|---|---|---|---|---|---|---|")
  for r in train:
    pair = _matched(train, r, r["batch"])
    ratio = (f"{r['step_ms'] / pair['step_ms']:.1f}x | "
             f"{r['train_peak_mb'] / pair['train_peak_mb']:.1f}x"
             if r["loss"] == "full" and pair else " | ")
    print(f"| {r['num_items']:,} | {label(r)} | {r['batch']} | {r['positions']:,.0f} | "
          f"{r['params_m']:.1f} | {r['step_ms']:,.0f} | {r['train_peak_mb'] / 1024:.2f} | "
          f"{(r['train_peak_mb'] - r['setup_rss_mb']) / 1024:.2f} | {ratio} |")
  for e in estimates:
    pair = _matched(train, e, e["batch"])
    print(f"| {e['num_items']:,} | full (extrapolated) | {e['batch']} | {e['positions']:,.0f} | | "
          f"~{e['step_ms']:,.0f} | ~{e['train_peak_mb'] / 1024:.1f} | | "
          f"~{e['step_ms'] / pair['step_ms']:.0f}x | ~{e['train_peak_mb'] / pair['train_peak_mb']:.1f}x |")
  print("\n| items | interactions | generate (s) | sequences + id map (s) | id_map.json (MB) | "
        "save (s) | load (s) | eval batch | eval (ms / user) | eval peak (GB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|")
  for r in evals:
    print(f"| {r['num_items']:,} | {r['interactions']:,} | {r['generate_s']:.1f} | "
          f"{r['build_s']:.1f} | {r['id_map_mb']:.1f} | {r['id_map_save_s']:.2f} | "
          f"{r['id_map_load_s']:.2f} | {r['eval_batch']}{'' if r['bounded'] else ' (unbounded)'} | "
          f"{r['eval_ms_per_user']:.2f} | {r['eval_peak_mb'] / 1024:.2f} |")
  print(f"\nExport and serving: SkipRec {blocks} blocks x {channels} channels, top-10; "
        "serving_default at the median P(keep) (about half the blocks).\n")
  print("| items | export incl. check (s) | export (MB) | variables (MB) | load (s) | "
        "B=1 serving_default (ms) | B=1 full (ms) | B=64 serving_default (ms) | B=64 full (ms) | "
        "serving peak (GB) |\n|---|---|---|---|---|---|---|---|---|---|")
  for r in serving:
    print(f"| {r['num_items']:,} | {r['export_s']:.1f} | {r['export_mb']:.0f} | "
          f"{r['variables_mb']:.0f} | {r['load_s']:.1f} | {r['serving_default_b1_ms']:.1f} | "
          f"{r['full_b1_ms']:.1f} | {r['serving_default_b64_ms']:.0f} | {r['full_b64_ms']:.0f} | "
          f"{r['serving_peak_mb'] / 1024:.2f} |")
