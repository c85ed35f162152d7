"""The PNG plots of a SkipRec run: usage by block, accuracy against executed blocks, and (graded
synthetic data) blocks executed by group beside each group's minimum."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def usage_by_block(block_usage: list[float], path: str, title: str = "") -> str:
  """Bar chart of the fraction of users that execute each block."""
  fig, ax = plt.subplots(figsize=(max(6, len(block_usage) * 0.25), 3.5))
  ax.bar(range(len(block_usage)), block_usage, color="#3b6ea5")
  ax.set_xlabel("block")
  ax.set_ylabel("fraction of users executing it")
  ax.set_ylim(0, 1.02)
  ax.set_title(title or "Usage by block (validation)")
  return save(fig, path)


def accuracy_vs_blocks(points: list[dict], full: dict | None, path: str,
                       capped: list[dict] | None = None) -> str:
  """NDCG@10 against mean executed blocks, one point per keep threshold and, with `capped`, one
  per compute cap (max_blocks, at threshold 0).

  points: [{"threshold": t, "mean_blocks": b, "NDCG@10": x}, ...]; full: the same keys (no
  threshold) for the backbone with every block, or None; capped: [{"max_blocks": m,
  "mean_blocks": b, "NDCG@10": x}, ...] or None.
  """
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  if capped:
    cap = sorted(capped, key=lambda p: p["mean_blocks"])
    ax.plot([p["mean_blocks"] for p in cap], [p["NDCG@10"] for p in cap], "^--", color="#d08030",
            label="max_blocks m (threshold 0)")
    for p in cap:
      ax.annotate(f"m={p['max_blocks']}", (p["mean_blocks"], p["NDCG@10"]), fontsize=7,
                  color="#a05010", textcoords="offset points", xytext=(3, -9))
  pts = sorted(points, key=lambda p: p["mean_blocks"])
  ax.plot([p["mean_blocks"] for p in pts], [p["NDCG@10"] for p in pts], "o-",
          label="keep threshold")
  for p in pts:
    ax.annotate(f"{p['threshold']:g}", (p["mean_blocks"], p["NDCG@10"]), fontsize=7,
                textcoords="offset points", xytext=(3, 3))
  if full is not None:
    ax.plot([full["mean_blocks"]], [full["NDCG@10"]], "s", color="black", label="all blocks")
  ax.set_xlabel("mean blocks executed per user")
  ax.set_ylabel("validation NDCG@10")
  ax.set_title("Accuracy against compute: keep threshold and max_blocks")
  ax.legend(fontsize=8)
  return save(fig, path)


def blocks_by_group(executed: dict[str, float], minimum: dict[str, int | None], num_blocks: int,
                    path: str) -> str:
  """Mean blocks executed per user of each group (bars, groups in order of need), beside the
  fewest blocks that see the group's context (black marks)."""
  groups = sorted(minimum)
  fig, ax = plt.subplots(figsize=(max(5, len(groups) * 1.3), 3.8))
  ax.bar(range(len(groups)), [executed.get(g, 0.0) for g in groups], color="#3b6ea5",
         label="executed (test, mean per user)")
  ax.scatter([i for i, g in enumerate(groups) if minimum[g] is not None],
             [minimum[g] for g in groups if minimum[g] is not None], marker="_", s=900,
             color="black", linewidths=3, label="minimum that sees the context", zorder=3)
  for i, g in enumerate(groups):
    ax.annotate(f"{executed.get(g, 0.0):.1f}", (i, executed.get(g, 0.0)), ha="center",
                textcoords="offset points", xytext=(0, 3), fontsize=8)
  ax.set_xticks(range(len(groups)), groups)
  ax.set_xlabel("group of users (context distance)")
  ax.set_ylabel(f"blocks of {num_blocks}")
  ax.set_title("Blocks executed by group")
  ax.legend(fontsize=8)
  return save(fig, path)


def save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
