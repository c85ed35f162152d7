"""Plain-text tables of a run's results."""

from __future__ import annotations

from tf_skiprec.metrics import KS

COLUMNS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in KS]


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
  """{"valid": {"HR@5": ..}, "test": {...}} -> an aligned text table, one row per entry."""
  width = max([5] + [len(name) for name in rows])
  head = f"{'split':<{width}} " + " ".join(f"{c:>8}" for c in COLUMNS)
  lines = [head, "-" * len(head)]
  for name, metrics in rows.items():
    lines.append(f"{name:<{width}} " + " ".join(f"{metrics[c]:>8.4f}" for c in COLUMNS))
  return "\n".join(lines)


def result_table(result: dict) -> str:
  """The metrics table of a `run()` result: validation and test, then by kind of user."""
  rows = {"valid": result["valid"], "test": result["test"]}
  for split in ("valid", "test"):
    for kind, metrics in result.get(f"{split}_by_kind", {}).items():
      rows[f"{split}/{kind}"] = metrics
  return metrics_table(rows)
