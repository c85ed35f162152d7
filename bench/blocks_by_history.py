"""Where a trained SkipRec's blocks go: the mean blocks its deterministic decisions run on the
training windows (each window once, and each user once) and on the validation histories (short,
left-padded ones and full ones), at the run's configured and its calibrated threshold and cap.

  .venv/bin/python bench/blocks_by_history.py \
      --run=old=runs/sasrec_ml100k/2/gumbel50cmd_sas4_grown_gelu_e20_ppp \
      --run=users=runs/sasrec_ml100k/2/gumbel50cmdu_sas4_grown_gelu_e20_ppp \
      --out=bench/results/sasrec_ml100k/blocks_by_history

Training holds policy.budget over what its budget term averages (policy.budget_over: the
batch's windows, user-balanced windows, or with "latest" the users' validation histories, for
which the "valid" column is the one the budget holds on); validation, model selection,
calibration and serving count one history per user. Where the two populations differ (with
train.window_stride=1 a user has a window per item, and the users under max_len items one
window each), a budget held per window can run over it per user: this prints both, so the gap
is seen, not guessed. Writes <out>/summary.json.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ml100k_common import in_fresh_process  # noqa: E402

RUNS = flags.DEFINE_multi_string("run", [], "NAME=WORKDIR of a finished gumbel or rl run.")
OUT = flags.DEFINE_string("out", "bench/out/blocks_by_history", "Directory for summary.json.")


def measure(workdir: str) -> dict:
  """Child process only: the run's mean blocks per population, at its configured (threshold,
  cap) and at the calibrated ones of its metrics.json."""
  import numpy as np  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from absl import logging  # noqa: PLC0415

  from ml100k_common import restore_best_run  # noqa: PLC0415
  from tf_skiprec.data.splits import Windows, train_windows  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  config, data, model = restore_best_run(workdir)
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  max_len = config.data.max_len
  train = train_windows(data.sequences, max_len, config.train.window_stride)
  # A training window's inputs are its first max_len + 1 - 1 items: the history ending one
  # item before its end, as an evaluation history.
  inputs = Windows(ends=train.ends - 1, lengths=np.maximum(train.lengths - 1, 0),
                   targets=np.zeros(len(train), np.int32), users=train.users)
  points = {"configured": (config.policy.threshold, config.policy.max_blocks or None),
            "calibrated": (metrics.get("threshold", config.policy.threshold),
                           metrics.get("max_blocks") or None)}
  out = {"workdir": workdir, "num_blocks": config.model.num_blocks,
         "budget_over": getattr(config.policy, "budget_over", "windows"),
         "blocks_budget": (metrics.get("threshold_calibration")
                          or metrics.get("max_blocks_calibration") or {}).get("budget"),
         "window_stride": config.train.window_stride, "max_len": max_len,
         "training_windows": len(train), "users": int(data.sequences.num_users),
         "valid_short_share": float(np.mean(data.valid.lengths < max_len)),
         "short_users_window_share": float(
             np.mean(np.isin(train.users, np.flatnonzero(data.valid.lengths < max_len)))),
         "test_ndcg10": metrics["test"]["NDCG@10"], "valid_ndcg10": metrics["valid"]["NDCG@10"]}

  def blocks(windows, threshold, cap) -> np.ndarray:
    rows = []
    for batch in data.pipelines.evaluation(windows, 1024):
      keep = model.decisions(batch["history"], tf.constant(threshold, tf.float32), cap)
      rows.append(tf.reduce_sum(keep, axis=1).numpy())
    return np.concatenate(rows)                                       # [W] blocks per row

  for name, (threshold, cap) in points.items():
    per_window = blocks(inputs, threshold, cap)
    per_user = np.bincount(train.users, per_window) / np.maximum(np.bincount(train.users), 1)
    has = np.bincount(train.users, minlength=data.sequences.num_users) > 0
    valid = blocks(data.valid, threshold, cap)
    short = data.valid.lengths < max_len
    out[name] = {"threshold": threshold, "max_blocks": cap,
                 "train_per_window": float(per_window.mean()),
                 "train_per_user": float(per_user[has[:len(per_user)]].mean()),
                 "valid": float(valid.mean()), "valid_short": float(valid[short].mean()),
                 "valid_full": float(valid[~short].mean())}
  return out


def table(rows: dict) -> str:
  lines = ["| run | point | threshold, cap | train: per window | train: per user | valid | "
           "valid: short histories | valid: full |", "|---|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    for point in ("configured", "calibrated"):
      p = r[point]
      lines.append(f"| {name} | {point} | {p['threshold']:.4g}, {p['max_blocks'] or '-'} | "
                   f"{p['train_per_window']:.2f} | {p['train_per_user']:.2f} | {p['valid']:.2f} | "
                   f"{p['valid_short']:.2f} | {p['valid_full']:.2f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not RUNS.value:
    raise app.UsageError("give at least one --run=NAME=WORKDIR (a finished gumbel or rl run)")
  rows = {}
  for spec in RUNS.value:
    name, _, workdir = spec.partition("=")
    if not name or not os.path.isfile(os.path.join(workdir, "metrics.json")):
      raise app.UsageError(f"--run={spec}: expected NAME=WORKDIR of a finished run (with "
                           "metrics.json). Fix: e.g. --run=old=runs/sasrec_ml100k/2/<variant>")
    rows[name] = in_fresh_process(measure, workdir)
    print(f"{name}: {rows[name]['num_blocks']} blocks, budget over "
          f"{rows[name]['budget_over']}; {rows[name]['valid_short_share']:.0%} of validation "
          f"users have a short history, {rows[name]['short_users_window_share']:.1%} of the "
          f"training windows are theirs", flush=True)
  text = table(rows)
  print("\nMean blocks run, deterministic decisions:\n\n" + text)
  os.makedirs(OUT.value, exist_ok=True)
  path = os.path.join(OUT.value, "summary.json")
  with open(path, "w") as f:
    json.dump({"command": "bench/blocks_by_history.py " + " ".join(f"--run={s}" for s in RUNS.value),
               "runs": rows, "table": text}, f, indent=2)
  print(f"written {path}")


if __name__ == "__main__":
  app.run(main)
