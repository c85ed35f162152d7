"""A built-in synthetic interaction log with real sequential structure, deterministic by seed.

Item popularity follows a Zipf law. Every item belongs to one of `num_themes` themes, and every
item has two fixed successors. There are two kinds of user:

* shallow: with probability `follow_prob` the next item is a successor of the last item, chosen
  by the second-last item's parity; so it follows from the last two items. Otherwise it is a
  popular item (Zipf).
* deep: with probability `theme_prob` the next item s_t is set by s_{t - lag}, the item `lag`
  (default 24) steps back; otherwise it is a popular item. With `deep_rule="theme"`, s_t is
  drawn (Zipf within the theme) from the theme of s_{t - lag}; with `deep_rule="echo"`, s_t is
  the fixed echo of s_{t - lag} (every item has one echo item), so it is fully predictable by a
  model that sees that far. The items in between say nothing about s_t, so only a model whose
  receptive field reaches `lag` steps back can use the rule.

A deep model therefore beats a shallow one on the deep users only; each user's kind is recorded
in `Interactions.user_kinds` so later work can check who gets more blocks.
"""

from __future__ import annotations

import numpy as np

from tf_skiprec.config import SyntheticConfig
from tf_skiprec.data.interactions import Interactions

SHALLOW, DEEP = "shallow", "deep"


def generate(cfg: SyntheticConfig) -> Interactions:
  """Generates the log: users "u0".."u{U-1}", raw item ids are shuffled integers (as strings)."""
  if cfg.num_items < 2 * cfg.num_themes or cfg.num_themes < 1:
    raise ValueError(f"synthetic: need num_items >= 2 * num_themes >= 2, got {cfg.num_items}, "
                     f"{cfg.num_themes}.")
  if cfg.deep_rule not in ("theme", "echo"):
    raise ValueError(f"synthetic: deep_rule must be 'theme' or 'echo', got {cfg.deep_rule!r}.")
  if not 1 <= cfg.min_length <= cfg.max_length:
    raise ValueError(f"synthetic: need 1 <= min_length <= max_length, got {cfg.min_length}, "
                     f"{cfg.max_length}.")
  rng = np.random.default_rng(cfg.seed)
  n = cfg.num_items
  popularity = 1.0 / np.arange(1, n + 1) ** cfg.zipf_exponent
  cdf = np.cumsum(popularity / popularity.sum())
  themes = np.arange(n) % cfg.num_themes
  rng.shuffle(themes)
  theme_members = [np.flatnonzero(themes == t) for t in range(cfg.num_themes)]
  theme_cdfs = [np.cumsum(popularity[m] / popularity[m].sum()) for m in theme_members]
  successors = _zipf(rng, cdf, (n, 2))
  echoes = np.random.default_rng([cfg.seed, 1]).permutation(n)  # own stream: "theme" data unchanged
  raw_of = rng.permutation(np.arange(10_000, 10_000 + n)).astype(str)  # not frequency-ordered

  users, items, times, kinds = [], [], [], {}
  for u in range(cfg.num_users):
    kind = DEEP if rng.random() < cfg.deep_fraction else SHALLOW
    length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
    seq = _zipf(rng, cdf, length)        # the "popular item" fallback at every step
    follow = rng.random(length)
    draw = rng.random(length)
    if kind == SHALLOW:
      for t in range(2, length):
        if follow[t] < cfg.follow_prob:
          seq[t] = successors[seq[t - 1], seq[t - 2] % 2]
    else:
      for t in range(cfg.lag, length):
        if follow[t] >= cfg.theme_prob:
          continue
        if cfg.deep_rule == "echo":
          seq[t] = echoes[seq[t - cfg.lag]]
        else:
          theme = themes[seq[t - cfg.lag]]
          pick = min(np.searchsorted(theme_cdfs[theme], draw[t]), len(theme_members[theme]) - 1)
          seq[t] = theme_members[theme][pick]
    name = f"u{u}"
    kinds[name] = kind
    users.append(np.full(length, name))
    items.append(raw_of[seq])
    start = rng.integers(0, 1_000_000)
    times.append(start + np.arange(length, dtype=np.float64))
  return Interactions(users=np.concatenate(users), items=np.concatenate(items),
                      timestamps=np.concatenate(times),
                      source=f"synthetic(seed={cfg.seed}, users={cfg.num_users})", user_kinds=kinds)


def _zipf(rng: np.random.Generator, cdf: np.ndarray, shape) -> np.ndarray:
  """Item indices drawn from the popularity cdf ([n]) with the given shape."""
  return np.minimum(np.searchsorted(cdf, rng.random(shape)), len(cdf) - 1)
