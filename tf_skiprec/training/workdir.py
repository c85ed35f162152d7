"""The work directory's own files: whose run it holds (config.json), the id map, metrics.json.

A run first checks, without writing anything, that a work directory it resumes holds the same
data and model (and, for SkipRec, policy) config: `check_resumable`. It claims the directory
(`claim`: config.json, id_map.json beside each checkpoint directory) only once everything before
its first step has worked: the data loaded, the model built, the checkpoints restored. So a run
that fails to start (a mistyped --dataset, a bad train.init_from) leaves the directory as it was,
and the corrected command runs there.
"""

from __future__ import annotations

import json
import os

from tf_skiprec.config import Config
from tf_skiprec.data.idmap import IdMap
from tf_skiprec.errors import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ID_MAP_FILE = "id_map.json"


MUST_MATCH = ("data", "model", "policy")  # config sections a resumed work directory must share
# Fields of other sections it must share too: what its checkpoints hold.
MUST_MATCH_FIELDS = (("train", "ema_decay"),)
# Fields whose meaning in a config.json written before they existed is not their default: before
# issue 15, policy.budget counted the blocks alone.
WRITTEN_BEFORE = {("policy", "budget_counts_policy"): False}


def check_resumable(config: Config, workdir: str) -> None:
  """Raises ConfigError if `workdir` holds a run of another data/model/policy config."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    previous = json.load(f)
  current = json.loads(config.to_json())  # tuples become lists, as in the file
  # A field added since the work directory was written counts as its default there, or as what
  # the run did before the field existed (WRITTEN_BEFORE).
  for (section, name), value in WRITTEN_BEFORE.items():
    if isinstance(previous.get(section), dict):
      previous[section].setdefault(name, value)
  previous = _with_defaults(previous, json.loads(Config().to_json()))
  for section in MUST_MATCH:
    if previous.get(section) != current[section]:
      before = previous.get(section) or {}
      diff = sorted(k for k in set(before) | set(current[section])
                    if before.get(k) != current[section].get(k))
      hint = ""
      if "budget_counts_policy" in diff:
        hint = (" It was written before policy.budget counted the policy network's own cost; "
                "--override policy.budget_counts_policy=false resumes it as it was trained.")
      raise ConfigError(
          f"{path}: this work directory holds a run with a different {section} config "
          f"(fields {diff}). Fix: use a new --workdir, or the same config to resume.{hint}")
  for section, name in MUST_MATCH_FIELDS:
    before, now = (previous.get(section) or {}).get(name), current[section][name]
    if before != now:
      raise ConfigError(
          f"{path}: this work directory holds a run with {section}.{name} = {before}, and its "
          f"checkpoints hold what that trains; this run has {now}. Fix: use a new --workdir, or "
          f"--override {section}.{name}={before} to resume it.")


def claim(config: Config, workdir: str, id_map: IdMap) -> None:
  """Writes config.json and the id map (in the directory, checkpoints/ and best/)."""
  for directory in ("", "checkpoints", "best"):
    os.makedirs(os.path.join(workdir, directory), exist_ok=True)
    id_map.save(os.path.join(workdir, directory, ID_MAP_FILE))
  write_json(json.loads(config.to_json()), os.path.join(workdir, CONFIG_FILE))


def write_json(value: dict, path: str) -> None:
  """Writes JSON atomically (a temporary file renamed over `path`)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def _with_defaults(values: dict, defaults: dict) -> dict:
  """values with every field missing from it (at any depth) taken from defaults."""
  out = dict(defaults)
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(defaults.get(key), dict):
      out[key] = _with_defaults(value, defaults[key])
    else:
      out[key] = value
  return out
