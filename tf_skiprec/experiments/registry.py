"""The registry of named experiments: `@register(name)` on a function that returns a new Config,
and `get_config(name)`."""

from __future__ import annotations

from typing import Callable

from tf_skiprec.config import Config
from tf_skiprec.errors import ConfigError

EXPERIMENTS: dict[str, Callable[[], Config]] = {}


def register(name: str):
  def wrap(fn: Callable[[], Config]) -> Callable[[], Config]:
    EXPERIMENTS[name] = fn
    return fn
  return wrap


def get_config(name: str) -> Config:
  """A new Config of the experiment `name` (config.name set to it)."""
  if name not in EXPERIMENTS:
    raise ConfigError(f"--experiment={name!r} is not registered. Fix: use one of {sorted(EXPERIMENTS)}.")
  config = EXPERIMENTS[name]()
  config.name = name
  return config
