"""What a valid Config is: the type of every field, the values of every enumerated field, the
range of every number, and the few rules between fields. `Config.validate()` applies them.

The registries hold what CHOICES names: tf_skiprec/backbones/ (model.backbone) and
tf_skiprec/policy.py's POLICY_BODIES (policy.body); a new backbone is added to both
(tests/test_layout.py checks that they agree). This module imports nothing of the project's but
the readers' formats and tf_skiprec/compute.py (the policy's share of a budget), neither of which
imports the schema, so that the schema (config.py) can import it.

Each problem is one line that names the field, says what is wrong and what is valid, and gives
the fix as the `--override` that would correct it (or the `--dataset` flag). Ranges are written
as text ("[0, 1)", ">= 1") so that the table below reads as the documentation of the ranges.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import typing
from typing import Any

from tf_skiprec import compute
from tf_skiprec.data.readers import FORMATS as DATA_FORMATS  # data.dataset = FORMAT:PATH

CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": ("nextitnet", "sasrec"),
    "model.activation": ("relu", "gelu"),
    "policy.body": ("cnn", "gru", "pool"),
    "policy.cost": ("quadratic", "lagrangian"),
    "policy.budget_over": ("windows", "users", "latest"),
    "policy.reward": ("likelihood", "quadratic", "reference"),
    "policy.tau_schedule": ("exponential", "linear", "constant"),
    "train.mode": ("pretrain", "gumbel", "rl"),
    "train.loss": ("full", "sampled"),
    "runtime.strategy": ("default", "mirrored", "multiworker"),
    "data.synthetic.deep_rule": ("theme", "echo"),
    "model.block_drop_mode": ("independent", "prefix", "prefix_log"),
}

RANGES: dict[str, str] = {
    "data.max_len": ">= 1",
    "data.min_interactions": ">= 3",              # a test item, a validation item, one to train on
    "data.synthetic.num_users": ">= 2",
    "data.synthetic.num_items": ">= 2",
    "data.synthetic.num_themes": ">= 1",
    "data.synthetic.deep_fraction": "[0, 1]",
    "data.synthetic.min_length": ">= 1",
    "data.synthetic.max_length": ">= 1",
    "data.synthetic.lag": ">= 1",
    "data.synthetic.zipf_exponent": ">= 0",
    "data.synthetic.follow_prob": "[0, 1]",
    "data.synthetic.theme_prob": "[0, 1]",
    "data.synthetic.seed": ">= 0",
    "model.channels": ">= 1",
    "model.num_blocks": ">= 1",
    "model.kernel_size": ">= 1",
    "model.num_heads": ">= 1",
    "model.inner_size": ">= 0",                   # 0: the channels
    "model.dilations": ">= 1",                    # each of them
    "model.dropout": "[0, 1)",
    "model.embedding_dropout": "[0, 1)",
    "model.block_drop": "[0, 1)",
    "policy.dilations": ">= 1",                   # each of them
    "policy.learning_rate": "> 0",
    "policy.initial_keep_prob": "(0, 1)",
    "policy.threshold": "[0, 1]",
    "policy.max_blocks": ">= 0",                  # 0: no cap
    "policy.budget": ">= 0",   # above 1 when the policy costs more than the blocks it skips
    "policy.budget_anneal_steps": ">= 0",
    "policy.budget_slack": ">= 0",
    "policy.selection_lambda": "[0, 1)",          # 1 - lambda * usage stays > 0
    "policy.penalty": ">= 0",
    "policy.user_charge": ">= 0",
    "policy.dual_lr": ">= 0",
    "policy.entropy_weight": ">= 0",
    "policy.entropy_ramp_steps": ">= 0",
    "policy.distill_weight": ">= 0",
    "policy.tau_start": "> 0",
    "policy.tau_end": "> 0",
    "policy.tau_anneal_steps": ">= 0",
    "policy.compute_cost": ">= 0",
    "policy.compute_cost_ramp_steps": ">= 0",
    "policy.reward_top_k": ">= 1",
    "policy.gamma": ">= 0",
    "policy.warmup_epochs": ">= 0",
    "policy.freeze_backbone_epochs": ">= 0",
    "train.pretrain_epochs": ">= 0",
    "train.pretrain_learning_rate": ">= 0",
    "train.pretrain_patience": ">= 0",
    "train.window_stride": ">= 0",
    "train.pretrain_window_stride": ">= 0",
    "train.batch_size": ">= 1",
    "train.eval_batch_size": ">= 1",
    "train.learning_rate": "> 0",
    "train.weight_decay": ">= 0",
    "train.clipnorm": ">= 0",
    "train.ema_decay": "[0, 1)",                  # 0: no averaging
    "train.epochs": ">= 0",                       # 0: evaluate (and export) a finished run
    "train.patience": ">= 0",
    "train.num_sampled": ">= 1",
    "train.checkpoint_every_steps": ">= 0",
    "train.max_checkpoints": ">= 1",
    "train.seed": ">= 0",
    "runtime.steps_per_loop": ">= 1",
    "runtime.summary_every_steps": ">= 1",
    "export.top_k": ">= 1",
    "export.num_check_histories": ">= 1",
}

_RANGE = re.compile(r"^(?:([\[(])\s*(\S+),\s*(\S+)\s*([\])])|(>=|>)\s*(\S+))$")


def problems(config, num_items: int | None = None) -> list[str]:
  """Every problem of `config` (a tf_skiprec.config.Config), one line each (empty when it is
  valid); with `num_items`, the catalogue's size, also what depends on the data."""
  defaults = {key: value for key, (value, _) in leaf_fields(type(config)()).items()}
  found = [p for key, (value, hint) in leaf_fields(config).items()
           for p in _field_problems(key, value, hint, defaults.get(key))]
  if found:  # the rules below assume well-typed, in-range fields
    return found
  found = _between_fields(config)
  if num_items is not None and config.export.base_dir and config.export.top_k > num_items:
    found.append(f"export.top_k = {config.export.top_k}: more than the {num_items} items of "
                 f"{config.data.dataset}. Fix: --override export.top_k={min(10, num_items)}.")
  return found


def leaf_fields(config) -> dict[str, tuple[Any, Any]]:
  """Every leaf field of a (nested) dataclass: {"model.num_blocks": (value, type hint), ...}."""
  out: dict[str, tuple[Any, Any]] = {}

  def walk(obj, prefix: str):
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
      value = getattr(obj, f.name)
      if dataclasses.is_dataclass(value):
        walk(value, f"{prefix}{f.name}.")
      else:
        out[prefix + f.name] = (value, hints[f.name])

  walk(config, "")
  return out


def _field_problems(key: str, value: Any, hint: Any, default: Any) -> list[str]:
  type_problem = _type_problem(key, value, hint)
  if type_problem:
    return [type_problem]
  if key in CHOICES and value not in CHOICES[key]:
    valid = ", ".join(repr(c) for c in CHOICES[key])
    return [f"{key} = {value!r}: not a valid value; valid values: {valid}. "
            f"Fix: --override {key}={CHOICES[key][0]} (or another of them)."]
  if key in RANGES:
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if not _in_range(v, RANGES[key])]
    if bad or (isinstance(value, tuple) and not value):
      example = _example(default)
      what = "each value must be" if isinstance(value, tuple) else "must be"
      return [f"{key} = {_show(value)}: {what} {_describe(RANGES[key])}. "
              f"Fix: --override {key}={example} (or another value {_describe(RANGES[key])})."]
  return []


def _between_fields(config) -> list[str]:
  """Rules that involve more than one field, or the file system."""
  found = []
  s = config.data.synthetic
  if s.min_length > s.max_length:
    found.append(f"data.synthetic.min_length = {s.min_length} is above data.synthetic.max_length "
                 f"= {s.max_length}. Fix: --override data.synthetic.max_length={s.min_length} "
                 "(or a smaller min_length).")
  if s.num_items < 2 * s.num_themes:
    found.append(f"data.synthetic.num_items = {s.num_items}: needs at least 2 items per theme "
                 f"(data.synthetic.num_themes = {s.num_themes}). Fix: --override "
                 f"data.synthetic.num_items={2 * s.num_themes} (or fewer themes).")
  lags = s.group_lags
  if any(lag < 1 for lag in lags) or len(set(lags)) != len(lags):
    found.append(f"data.synthetic.group_lags = {_show(lags)}: each lag must be >= 1 and the lags "
                 "distinct. Fix: --override data.synthetic.group_lags=2,8,24,48 (or empty for the "
                 "two-kind log).")
  for key in ("window_stride", "pretrain_window_stride"):
    stride = getattr(config.train, key)
    if stride > config.data.max_len:
      found.append(f"train.{key} = {stride} is above data.max_len = {config.data.max_len}: "
                   "windows would leave items out. Fix: --override "
                   f"train.{key}={config.data.max_len // 2} (or 0 for end to end).")
  m = config.model
  if m.backbone == "sasrec" and m.channels % m.num_heads:
    heads = max(h for h in range(1, m.num_heads + 1) if m.channels % h == 0)
    found.append(f"model.num_heads = {m.num_heads}: model.channels = {m.channels} is not a "
                 "multiple of it (each head reads channels / num_heads of them). Fix: "
                 f"--override model.num_heads={heads} (or channels a multiple of the heads).")
  if m.backbone == "nextitnet" and m.activation != "relu":
    found.append(f"model.activation = {m.activation!r}: NextItNet+'s blocks are ReLU; the "
                 "activation is SASRec's feed-forward layer's. Fix: --override "
                 "model.activation=relu (or model.backbone=sasrec).")
  if config.policy.max_blocks > m.num_blocks >= 1:
    found.append(f"policy.max_blocks = {config.policy.max_blocks} is above model.num_blocks = "
                 f"{m.num_blocks}: a user cannot run more blocks than there are. Fix: --override "
                 f"policy.max_blocks={m.num_blocks} (or 0 for no cap).")
  if (config.policy.distill_weight and config.train.loss != "full"
      and config.train.mode != "pretrain"):
    found.append(f"policy.distill_weight = {config.policy.distill_weight} with train.loss = "
                 f"{config.train.loss!r}: distillation compares the two paths' softmax over every "
                 "item, which the sampled softmax exists to avoid. Fix: --override "
                 "policy.distill_weight=0 (or train.loss=full on a catalogue whose [positions, "
                 "items] logits fit in memory).")
  if config.train.grow_from and config.train.init_from:
    found.append(f"train.grow_from = {config.train.grow_from!r} and train.init_from = "
                 f"{config.train.init_from!r}: a run starts from one of them. Fix: --override "
                 "train.grow_from= (start from init_from) or train.init_from= (grow).")
  found += _dataset_problems(config.data.dataset)
  found += _budget_problems(config)
  name = config.export.model_name
  if not name or "/" in name or os.sep in name or name in (".", ".."):
    found.append(f"export.model_name = {name!r}: must be a folder name (not empty, no '/'). "
                 "Fix: --override export.model_name=skiprec.")
  return found


def _budget_problems(config) -> list[str]:
  """A SkipRec budget below what the policy network alone costs cannot be met by any number of
  blocks (policy.budget counts the policy's own share of the compute, tf_skiprec/compute.py)."""
  p, m = config.policy, config.model
  if config.train.mode == "pretrain" or p.body not in CHOICES["policy.body"] or min(
      m.num_blocks, m.channels, m.kernel_size, config.data.max_len) < 1:
    return []
  share = compute.budget_share(config)
  if p.budget >= share:
    return []
  pool = compute.policy_share(dataclasses.replace(config, policy=dataclasses.replace(
      p, body="pool")))
  return [f"policy.budget = {p.budget:g}: below the policy network's own cost, {share:.3f} of the "
          f"full backbone's compute (policy.body {p.body!r}, "
          f"{share * m.num_blocks:.1f} blocks' worth of {m.num_blocks}); the budget counts the "
          f"policy beside the blocks, so no number of blocks meets it. Fix: --override "
          f"policy.budget={share + 0.1:.3f} (the blocks at 0.1), or "
          f"--override policy.body=pool (it costs {pool:.4f}), or "
          "--override policy.budget_counts_policy=false (a budget on the blocks alone)."]


def _dataset_problems(dataset: str) -> list[str]:
  formats = ", ".join(DATA_FORMATS)
  fix = (f"Fix: --dataset=FORMAT:PATH with FORMAT one of {formats} (e.g. "
         "--dataset=recbole:data/ml-100k), or --dataset=synthetic.")
  if dataset == "synthetic":
    return []
  if not dataset:
    return ["data.dataset is not set: this experiment reads an interaction log that the "
            "repository does not ship (MovieLens-100K for the ml100k_* experiments: its licence "
            f"forbids redistribution). {fix}"]
  fmt, colon, path = dataset.partition(":")
  if not colon or fmt.strip().lower() not in DATA_FORMATS:
    what = "has no FORMAT: prefix" if not colon else f"has an unknown format {fmt!r}"
    return [f"data.dataset = {dataset!r} {what}. {fix}"]
  if not path.strip():
    return [f"data.dataset = {dataset!r} has no path after {fmt}:. {fix}"]
  if not os.path.exists(path):
    return [f"data.dataset = {dataset!r}: {path} does not exist (relative paths start from "
            f"{os.getcwd()}). Fix: check the path; --dataset=recbole:PATH takes an atomic .inter "
            "file or the directory that holds it."]
  return []


# What each field type must hold: (test, what it is, an --override example, its JSON form).
_TYPES = {
    "tuple": (lambda v: isinstance(v, tuple) and all(_is_int(x) for x in v),
              "a list of integers", "1,4", "a list of integers, [1, 4]"),
    bool: (lambda v: isinstance(v, bool), "true or false", "true", "true or false"),
    int: (lambda v: _is_int(v), "an integer", "1", "an integer, 1"),
    float: (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(v), "a finite number", "0.5", "a number, 0.5"),
    str: (lambda v: isinstance(v, str), "a string", "text", "a string, \"text\""),
}


def _type_problem(key: str, value: Any, hint: Any) -> str | None:
  ok, name, example, in_json = _TYPES["tuple" if typing.get_origin(hint) is tuple else hint]
  if ok(value):
    return None
  return (f"{key} = {_show(value)} ({type(value).__name__}): must be {name}. "
          f"Fix: --override {key}={example} (in a JSON config: {in_json}).")


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _in_range(value: float, spec: str) -> bool:
  match = _RANGE.match(spec)
  if match is None:
    raise ValueError(f"bad range {spec!r}")
  opening, low, high, closing, op, bound = match.groups()
  if op:
    return value >= float(bound) if op == ">=" else value > float(bound)
  above = value >= float(low) if opening == "[" else value > float(low)
  below = value <= float(high) if closing == "]" else value < float(high)
  return above and below


def _describe(spec: str) -> str:
  return spec if spec[0] in ">" else f"in {spec}"


def _example(default: Any) -> str:
  """A valid value for the fix: the field's default (tests/test_config.py checks that every
  default is valid)."""
  return _show(default).strip("'")


def _show(value: Any) -> str:
  if isinstance(value, tuple):
    return ",".join(str(v) for v in value) or "(empty)"
  return repr(value)
