"""A search's reports: the table of trials (Markdown) and the Pareto plot of validation NDCG@10
against the estimated MFLOPs per request (executed blocks, the policy network and the softmax)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tf_skiprec.training.plots import save  # noqa: E402


def trials_table(rows: list[dict], keys: list[str]) -> str:
  """A Markdown table of a search's trials: id, status, searched values, score (the objective:
  NDCG@10 within the compute limit, in [-2, -1] over it; tf_skiprec/tuning/search.py), validation
  NDCG@10, mean executed blocks and MFLOPs per request (blank until a trial finishes)."""
  def cell(value) -> str:
    if value is None:
      return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)

  names = ["trial", "status", *keys, "score", "valid_ndcg10", "mean_blocks", "mflops"]
  lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
  for row in rows:
    lines.append("| " + " | ".join(cell(row.get(n)) for n in names) + " |")
  return "\n".join(lines)


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
  """The points no other point beats on both axes (less or equal compute and higher or equal
  NDCG, one strictly): (compute, NDCG@10, label), sorted by compute."""
  front = [p for p in points
           if not any(q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1])
                      for q in points)]
  return sorted(front)


def pareto(points: list[tuple[float, float, str]], path: str, limit: float | None = None) -> str:
  """Scatter of a search's trials, validation NDCG@10 against MFLOPs per request (the blocks run,
  the policy and the softmax: tuning/space.py), with the Pareto front drawn and labelled by
  trial, and the MFLOPs limit if there is one."""
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.scatter([p[0] for p in points], [p[1] for p in points], color="#9aa9bd", label="trials")
  front = pareto_front(points)
  ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="#c0392b",
          label="Pareto front")
  for blocks, ndcg, label in front:
    ax.annotate(label, (blocks, ndcg), fontsize=7, textcoords="offset points", xytext=(3, 3))
  if limit:
    ax.axvline(limit, color="black", linestyle=":", label="MFLOPs limit")
  ax.set_xlabel("MFLOPs per request: blocks run, policy, softmax (validation)")
  ax.set_ylabel("validation NDCG@10")
  ax.set_title("Search: accuracy against compute")
  ax.legend()
  return save(fig, path)
