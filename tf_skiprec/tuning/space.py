"""The hyper-parameter search space of `train.py --mode=tune`, and what a trial's values mean.

A dimension is a config key (`model.num_blocks`, as in `--override`) with a set of choices or a
range. DEFAULT_SPACE covers the backbone's depth and width, both learning rates, the policy's
compute budget, the Gumbel temperature schedule and the training mode. From the CLI:
  --tune=model.num_blocks=8,16          narrows a dimension to these choices (or adds one)
  --tune=train.learning_rate=1e-4:3e-3:log   ... to a range (`:log` samples on a log scale)
  --override=policy.budget=0.3          fixes a value: the dimension leaves the search
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing

from tf_skiprec.config import Config, parse_value
from tf_skiprec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched config key: `choices`, or a [low, high] range (int or float)."""
  key: str
  choices: tuple = ()
  low: float | None = None
  high: float | None = None
  log: bool = False
  integer: bool = False

  def declare(self, hp):
    """Registers the dimension with a keras_tuner HyperParameters; returns its value."""
    if self.choices:
      return hp.Choice(self.key, list(self.choices))
    sampling = "log" if self.log else "linear"
    if self.integer:
      return hp.Int(self.key, int(self.low), int(self.high), sampling=sampling)
    return hp.Float(self.key, float(self.low), float(self.high), sampling=sampling)

  def describe(self) -> str:
    if self.choices:
      return f"{self.key} in {{{', '.join(str(c) for c in self.choices)}}}"
    return f"{self.key} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


DEFAULT_SPACE = (
    Dimension("model.num_blocks", choices=(4, 8, 16)),
    Dimension("model.channels", choices=(32, 64)),
    Dimension("train.learning_rate", low=3e-4, high=3e-3, log=True),
    Dimension("policy.learning_rate", low=3e-4, high=3e-3, log=True),
    Dimension("policy.budget", low=0.1, high=0.7),          # gumbel: compute, policy included
    Dimension("policy.compute_cost", low=0.1, high=2.0, log=True),  # rl: nats per full usage
    Dimension("policy.tau_start", choices=(1.0, 5.0, 10.0)),
    Dimension("policy.tau_end", choices=(0.1, 0.5, 1.0)),
    Dimension("policy.tau_schedule", choices=("exponential", "linear", "constant")),
    Dimension("train.mode", choices=("gumbel", "rl")),
)


def parse_dimension(spec: str, config: Config) -> Dimension:
  """`key=a,b,c` (choices) or `key=low:high[:log]` (a range) -> Dimension; values are checked
  against the config field's type."""
  if "=" not in spec:
    raise ConfigError(f"--tune {spec!r}: expected key=a,b,c or key=low:high[:log], e.g. "
                      f"--tune=model.num_blocks=8,16.")
  key, text = (part.strip() for part in spec.split("=", 1))
  hint = config.field(key, f"--tune {spec!r}")[2]
  if key == "policy.selection_lambda":
    raise ConfigError(f"--tune {spec!r}: {key} is the search objective's price of compute "
                      f"(tf_skiprec/tuning/search.py); searching it would score each trial by "
                      f"its own rule. Fix: set it for every trial with --override={key}=x.")
  if hint not in (int, float, str, bool):
    raise ConfigError(f"--tune {spec!r}: {key} is not a number, string or flag; it cannot be "
                      f"searched. Fix: set it with --override.")
  if ":" in text:
    parts = text.split(":")
    log = parts[-1] == "log"
    bounds = parts[:-1] if log else parts
    if len(bounds) != 2 or hint not in (int, float):
      raise ConfigError(f"--tune {spec!r}: a range is low:high or low:high:log, for an int or "
                        f"float field. Fix: e.g. --tune={key}=1e-4:1e-2:log, or list choices.")
    low, high = (_value(config, key, b) for b in bounds)
    if not low < high or (log and low <= 0):
      raise ConfigError(f"--tune {spec!r}: need low < high (and low > 0 for :log).")
    return Dimension(key, low=low, high=high, log=log, integer=hint is int)
  choices = tuple(_value(config, key, c) for c in text.split(",") if c.strip())
  if not choices:
    raise ConfigError(f"--tune {spec!r}: no choices given. Fix: e.g. --tune={key}=8,16.")
  return Dimension(key, choices=choices)


def build_space(config: Config, tune_specs: list[str], fixed_keys: list[str]) -> list[Dimension]:
  """DEFAULT_SPACE with `tune_specs` replacing (or adding) dimensions, less the keys fixed by
  --override. Every key must be a config field."""
  space = {d.key: d for d in DEFAULT_SPACE}
  for spec in tune_specs:
    dim = parse_dimension(spec, config)
    space[dim.key] = dim
  for key in fixed_keys:
    space.pop(key, None)
  if "train.mode" not in space and config.train.mode == "pretrain":  # no policy to tune
    defaults = {d.key for d in DEFAULT_SPACE}
    space = {k: d for k, d in space.items() if not (k.startswith("policy.") and k in defaults)}
  return list(space.values())


def trial_config(base: Config, values: dict[str, typing.Any]) -> Config:
  """The base config with a trial's values set (by the same parser as --override)."""
  config = copy.deepcopy(base)
  for key, value in values.items():
    config.override(f"{key}={value}")
  return config


def _value(config: Config, key: str, text: str):
  """Parses one value for `key` as --override would (raises ConfigError if it does not fit)."""
  return parse_value(text, config.field(key, f"--tune {key}")[2], key)


def within_limit(mean_blocks: float, mflops: float, limit_blocks: float, limit_mflops: float
                 ) -> tuple[bool, float]:
  """(within both limits, relative excess over the tighter one); a limit <= 0 is no limit."""
  excess = 0.0
  if limit_blocks > 0:
    excess = max(excess, mean_blocks / limit_blocks - 1.0)
  if limit_mflops > 0:
    excess = max(excess, mflops / limit_mflops - 1.0)
  return excess <= 1e-9, max(excess, 0.0) if math.isfinite(excess) else math.inf
