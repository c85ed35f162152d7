"""Plain-text tables of a run's results."""

from __future__ import annotations

from tf_skiprec.metrics import KS

COLUMNS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in KS]


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
  """{"valid": {"HR@5": .., "blocks": ..}, ...} -> an aligned text table, one row per entry.

  A "blocks" entry (mean blocks executed per user) adds a column when any row has one, and a
  "min" entry (the fewest blocks that see a graded group's context) a "min" column.
  """
  with_blocks = any("blocks" in m for m in rows.values())
  with_min = any("min" in m for m in rows.values())
  width = max([5] + [len(name) for name in rows])
  head = f"{'split':<{width}} " + " ".join(f"{c:>8}" for c in COLUMNS)
  head += f" {'blocks':>8}" if with_blocks else ""
  head += f" {'min':>5}" if with_min else ""
  lines = [head, "-" * len(head)]
  for name, metrics in rows.items():
    line = f"{name:<{width}} " + " ".join(f"{metrics[c]:>8.4f}" for c in COLUMNS)
    if with_blocks:
      line += f" {metrics['blocks']:>8.2f}" if "blocks" in metrics else f" {'':>8}"
    if with_min:
      low = metrics.get("min")
      line += f" {low if low is not None else '-':>5}"
    lines.append(line)
  return "\n".join(lines)


def result_table(result: dict) -> str:
  """The table of a `run()` result: validation and test with mean blocks executed, then by kind
  of user, the rule that chose the best epoch, then (SkipRec) the blocks executed per user, the
  compute per request with the policy's beside the blocks', and the sweeps."""
  rows = {}
  for split in ("valid", "test"):
    rows[split] = {**result[split], "blocks": result[f"{split}_blocks"]["mean"]}
  for split in ("valid", "test"):
    for kind, metrics in result.get(f"{split}_by_kind", {}).items():
      rows[f"{split}/{kind}"] = {**metrics, "blocks": result[f"{split}_blocks"]["by_kind"][kind]}
      if kind in result.get("min_blocks_by_kind", {}):
        rows[f"{split}/{kind}"]["min"] = result["min_blocks_by_kind"][kind]
  text = metrics_table(rows)
  if "selection_rule" in result:
    text += f"\nbest epoch {result['best_epoch']} chosen by: {result['selection_rule']}"
  if result.get("mode", "pretrain") != "pretrain":
    b = result["test_blocks"]
    text += (f"\n\nblocks executed per user (test): mean {b['mean']:.2f} of {b['num_blocks']}, "
             f"min {b['min']}, max {b['max']}; {b['distinct_policies']} distinct policies")
    text += "\nusage by block: " + " ".join(f"{u:.2f}" for u in b["block_usage"])
    if "threshold" in result:
      text += "\n" + decisions_line(result)
    if "test_compute" in result:
      c = result["test_compute"]
      text += (f"\ncompute per request (test, estimated): {c['total']:.3f} MFLOPs = blocks "
               f"{c['blocks']:.3f} + policy {c['policy']:.3f} ({c['policy_in_blocks']:.1f} "
               f"blocks' worth) + softmax {c['softmax']:.3f}; {c['of_full']:.0%} of the full "
               f"backbone's {c['full']:.3f}")
    if b["by_kind"]:
      low = result.get("min_blocks_by_kind", {})
      text += "\nmean blocks by kind of user: " + ", ".join(
          f"{k} {v:.2f}" + (f" (min {low[k]})" if k in low else "") for k, v in b["by_kind"].items())
    text += "\n\nvalidation across keep thresholds (0 = every block):\n" + "\n".join(
        f"  threshold {threshold_text(p['threshold'])}: {p['mean_blocks']:6.2f} blocks, "
        f"NDCG@10 {p['NDCG@10']:.4f}" for p in result["threshold_sweep"])
    if result.get("max_blocks_sweep"):
      text += ("\n\nvalidation across max_blocks (threshold 0: each user runs its m most probable "
               "blocks):\n" + "\n".join(
                   f"  max_blocks {p['max_blocks']:4d}: {p['mean_blocks']:6.2f} blocks, "
                   f"NDCG@10 {p['NDCG@10']:.4f}" for p in result["max_blocks_sweep"]))
  return text


def threshold_text(threshold: float) -> str:
  """A keep threshold as the report prints it: two decimals (0.50), or as many as a calibrated
  one needs (0.987341), so that a threshold near 1 is not printed as 1.00."""
  return f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:.6g}"


def decisions_line(result: dict) -> str:
  """How the evaluation and the export decide: the keep threshold, the cap, and what the
  calibrations (train.calibrate_threshold, train.calibrate_max_blocks) did."""
  cap = result.get("max_blocks")
  text = (f"decisions: keep a block iff P(keep) >= {threshold_text(result['threshold'])}"
          + (f", at most {cap} block{'' if cap == 1 else 's'} per user" if cap else ""))
  notes = []
  for key, field in (("threshold_calibration", "threshold"), ("max_blocks_calibration",
                                                                "max_blocks")):
    c = result.get(key)
    if c is None:
      continue
    if c[field] is None:
      notes.append(f"no {field} held the budget ({c['budget']:.3f}) on validation")
    elif c["calibrated"]:
      notes.append(f"{field} calibrated to hold the budget ({c['budget']:.3f}): validation "
                   f"usage {c['valid_usage']:.3f}")
    else:
      notes.append(f"the {field} already held the budget ({c['budget']:.3f})")
  choice = result.get("calibration_choice")
  if choice:
    other = next(field for field in choice["valid"] if field != choice["chosen"])
    notes.append(f"applied: the {choice['chosen']}, validation {choice['metric']} "
                 f"{choice['valid'][choice['chosen']]:.4f} against the {other}'s "
                 f"{choice['valid'][other]:.4f}")
  return text + ("; " + "; ".join(notes) if notes else "")
