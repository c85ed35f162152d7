"""RecBole's log, read: its epochs, best epoch, time to best and results (bench/recbole_peer.py
runs RecBole and writes the log), and our time to best set against it as ratios.

No flags here, so tests import it beside the other bench modules.
"""

from __future__ import annotations

import re

_TRAIN = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")
_EVAL = re.compile(r"epoch (\d+) evaluating \[time: ([0-9.]+)s, valid_score: ([0-9.]+)\]")
_PAIR = re.compile(r"\('([\w@]+)', ([0-9.eE+-]+)\)")
_PARAMS = re.compile(r"Trainable parameters: (\d+)")
_FINISHED = re.compile(r"Finished training, best eval result in epoch (\d+)")
_VERSIONS = re.compile(r"PEER versions torch (\S+) recbole (\S+) threads (\d+)")


def parse_log(text: str) -> dict:
  """RecBole's log -> its epochs (training and validation seconds, valid NDCG@10), the best
  epoch, the time to it, and the best validation and test results. Epochs are 0-based, as
  RecBole numbers them. The best epoch is the first with the highest validation score (RecBole
  keeps a new best only if it is strictly higher)."""
  train = {int(e): float(s) for e, s in _TRAIN.findall(text)}
  evals = {int(e): (float(s), float(v)) for e, s, v in _EVAL.findall(text)}
  epochs = sorted(set(train) & set(evals))
  if not epochs:
    raise ValueError("no epoch was both trained and validated in this RecBole log: did RecBole "
                     "start? Its first lines say why not.")
  if epochs != list(range(len(epochs))):
    raise ValueError(f"the log's epochs are not 0..n-1 ({epochs[:5]}...): is it two runs' logs "
                     "in one file? Give one run's log.")
  best = max(epochs, key=lambda e: (evals[e][1], -e))
  finished = _FINISHED.search(text)
  if finished and int(finished.group(1)) != best:
    raise ValueError(f"RecBole names epoch {finished.group(1)} as its best, the scores epoch "
                     f"{best}: the log is not one this parser knows.")
  out = {
      "epochs": [{"epoch": e, "train_seconds": train[e], "valid_seconds": evals[e][0],
                  "valid_ndcg@10": evals[e][1]} for e in epochs],
      "epochs_run": len(epochs),
      "best_epoch": best,
      "early_stopped": finished is not None,   # RecBole logs that line only when it stops early
      "seconds_to_best": sum(train[e] for e in epochs if e <= best),
      "valid_seconds_to_best": sum(evals[e][0] for e in epochs if e <= best),
      "train_seconds": sum(train[e] for e in epochs),
      "mean_epoch_seconds": sum(train[e] for e in epochs) / len(epochs),
  }
  for key, label in (("best_valid", "best valid : "), ("test", "test result: ")):
    start = text.rfind(label)
    if start >= 0:
      line = text[start:].splitlines()[0]
      out[key] = {k.upper().replace("HIT", "HR"): float(v)
                  for k, v in _PAIR.findall(line)}
  params = _PARAMS.search(text)
  out["parameters"] = int(params.group(1)) if params else None
  versions = _VERSIONS.search(text)
  if versions:
    out["torch"], out["recbole"], out["threads"] = (versions.group(1), versions.group(2),
                                                    int(versions.group(3)))
  return out


def compare(peer: dict, ours: dict, variant: str) -> dict:
  """Our variant's seconds to best (each seed and the mean) against RecBole's, as ratios."""
  if variant not in ours.get("runs", {}):
    raise ValueError(f"--ours has no runs of {variant!r} (it has {sorted(ours.get('runs', {}))}):"
                     " give --variant one of them.")
  runs = ours["runs"][variant]
  seconds = [r["seconds_to_best"] for r in runs]
  mean = sum(seconds) / len(seconds)
  return {
      "variant": variant,
      "seeds": [r["seed"] for r in runs],
      "seconds_to_best": seconds,
      "mean_seconds_to_best": mean,
      "test_ndcg@10": [r["test"]["NDCG@10"] for r in runs],
      "recbole_seconds_to_best": peer["seconds_to_best"],
      "ratio_of_mean": mean / peer["seconds_to_best"],
      "ratios": [s / peer["seconds_to_best"] for s in seconds],
      "within_a_tenth": mean <= peer["seconds_to_best"] / 10,
  }
