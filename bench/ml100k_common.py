"""What the ML-100k benchmarks share: where the data is, and mean ± std over seeds."""

from __future__ import annotations

import os
import statistics

from absl import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join("..", "shared", "data", "ml-100k")  # relative to the repository
INTER_FILE = "ml-100k.inter"


def resolve_data(path: str) -> str:
  """An absolute data directory holding ml-100k.inter; tries the cwd, then the repository."""
  candidates = [path] if os.path.isabs(path) else [os.path.abspath(path), os.path.join(REPO, path)]
  for candidate in candidates:
    candidate = os.path.normpath(candidate)
    if os.path.isfile(os.path.join(candidate, INTER_FILE)):
      return candidate
    if os.path.isfile(candidate) and candidate.endswith(".inter"):
      return os.path.dirname(candidate)
  raise app.UsageError(
      f"--data={path}: no {INTER_FILE} in {' or '.join(map(os.path.normpath, candidates))}. "
      "Fix: pass the directory of ML-100k in RecBole's atomic format, e.g. "
      "--data=/work/shared/data/ml-100k.")


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
