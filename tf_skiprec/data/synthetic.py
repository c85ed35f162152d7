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

With `every_item=True` every catalogue item occurs at least once (large-catalogue runs: the id
map holds only the items of the log): a random permutation of the catalogue, from its own random
stream, replaces the popular-item draw at `num_items` randomly chosen "free" positions, the ones
no rule sets (a shallow user's first two items and the steps where it does not follow; a deep
user's first `lag` items and the steps where the rule does not apply). The rules are applied
after, so they hold at every other position as before. With it off (the default) the log is the
same, draw for draw, as the first per-user version of this generator.

Cost: the random draws are made user by user in one stream (six calls per user, the order that
fixes the log); the rules are applied for all users at once, a time step (shallow) or `lag` steps
(deep) at a time. 1,000,000 items in 1.5M interactions: 1-2 s (100 to 300 users).
"""

from __future__ import annotations

import numpy as np

from tf_skiprec.config import SyntheticConfig
from tf_skiprec.config_rules import CHOICES
from tf_skiprec.data.interactions import Interactions

SHALLOW, DEEP = "shallow", "deep"


def generate(cfg: SyntheticConfig) -> Interactions:
  """Generates the log: users "u0".."u{U-1}", raw item ids are shuffled integers (as strings)."""
  if cfg.group_lags:
    return generate_graded(cfg)
  if cfg.num_items < 2 * cfg.num_themes or cfg.num_themes < 1:
    raise ValueError(f"synthetic: need num_items >= 2 * num_themes >= 2, got {cfg.num_items}, "
                     f"{cfg.num_themes}.")
  rules = CHOICES["data.synthetic.deep_rule"]
  if cfg.deep_rule not in rules:
    raise ValueError(f"synthetic: deep_rule must be one of {rules}, got {cfg.deep_rule!r}.")
  _check_lengths(cfg)
  rng = np.random.default_rng(cfg.seed)
  n = cfg.num_items
  popularity, cdf = _zipf_law(n, cfg.zipf_exponent)
  themes = np.arange(n) % cfg.num_themes
  rng.shuffle(themes)
  theme_members = [np.flatnonzero(themes == t) for t in range(cfg.num_themes)]
  theme_cdfs = [np.cumsum(popularity[m] / popularity[m].sum()) for m in theme_members]
  successors = _zipf(rng, cdf, (n, 2))
  echoes = np.random.default_rng([cfg.seed, 1]).permutation(n)  # own stream: "theme" data unchanged
  raw_of = rng.permutation(np.arange(10_000, 10_000 + n)).astype(str)  # not frequency-ordered

  # The draws, user by user in the original order; flat arrays, user u at offsets[u]:offsets[u+1].
  deep = np.zeros(cfg.num_users, bool)
  lengths = np.zeros(cfg.num_users, np.int64)
  starts = np.zeros(cfg.num_users, np.int64)
  fallback, follow, draw = [], [], []
  for u in range(cfg.num_users):
    deep[u] = rng.random() < cfg.deep_fraction
    lengths[u] = rng.integers(cfg.min_length, cfg.max_length + 1)
    fallback.append(rng.random(lengths[u]))  # the "popular item" at every step (Zipf, below)
    follow.append(rng.random(lengths[u]))
    draw.append(rng.random(lengths[u]))
    starts[u] = rng.integers(0, 1_000_000)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  seq = np.minimum(np.searchsorted(cdf, np.concatenate(fallback)), n - 1)   # [T]
  follow, draw = np.concatenate(follow), np.concatenate(draw)                # [T]
  step = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)           # [T] t within user

  if cfg.every_item:
    _place_every_item(cfg, seq, follow, step, np.repeat(deep, lengths))
  _apply_rules(cfg, seq, follow, draw, offsets, deep, successors, echoes, themes, theme_members,
               theme_cdfs)
  names = np.array([f"u{u}" for u in range(cfg.num_users)])
  kinds = {name: DEEP if d else SHALLOW for name, d in zip(names.tolist(), deep.tolist())}
  source = f"synthetic(seed={cfg.seed}, users={cfg.num_users}"
  return Interactions(users=np.repeat(names, lengths), items=raw_of[seq],
                      timestamps=(np.repeat(starts, lengths) + step).astype(np.float64),
                      source=source + (", every item)" if cfg.every_item else ")"),
                      user_kinds=kinds)


def group_name(lag: int) -> str:
  """The name of the graded group whose next item is set by the item `lag` steps back; names sort
  in order of need ("lag02" < "lag08" < "lag24" < "lag48")."""
  return f"lag{lag:02d}"


def group_lag(kind: str) -> int | None:
  """The lag of a graded group's name ("lag24" -> 24); None for any other kind of user."""
  if kind.startswith("lag") and kind[3:].isdigit():
    return int(kind[3:])
  return None


def generate_graded(cfg: SyntheticConfig) -> Interactions:
  """The graded log (`group_lags` set): users fall into len(group_lags) equal-probability groups;
  in the group of lag L, with probability `theme_prob`, s_t = echo(s_{t-L}) (t >= L), else s_t is a
  popular item (Zipf). The nearest item that says anything about s_t is L steps back, so a model
  needs a receptive field of L - 1 positions before the last one to predict that group's next
  item. Each user's group is recorded as its kind (group_name(L))."""
  if any(lag < 1 for lag in cfg.group_lags) or len(set(cfg.group_lags)) != len(cfg.group_lags):
    raise ValueError(f"synthetic: group_lags must be distinct lags >= 1, got {cfg.group_lags}.")
  _check_lengths(cfg)
  rng = np.random.default_rng(cfg.seed)
  n = cfg.num_items
  _, cdf = _zipf_law(n, cfg.zipf_exponent)
  echoes = rng.permutation(n)
  raw_of = rng.permutation(np.arange(10_000, 10_000 + n)).astype(str)
  lags = np.sort(np.asarray(cfg.group_lags, np.int64))
  group = rng.integers(0, len(lags), cfg.num_users)                         # [U]
  lengths = rng.integers(cfg.min_length, cfg.max_length + 1, cfg.num_users)  # [U]
  starts = rng.integers(0, 1_000_000, cfg.num_users)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  total = int(offsets[-1])
  seq = np.minimum(np.searchsorted(cdf, rng.random(total)), n - 1)         # [T]
  follow = rng.random(total)                                               # [T]
  step = np.arange(total) - np.repeat(offsets[:-1], lengths)               # [T]
  lag_of = np.repeat(lags[group], lengths)                                 # [T]
  # Position t reads t - lag only; going `min(lags)` steps at a time, every read is final.
  ruled = (step >= lag_of) & (follow < cfg.theme_prob)
  for t in range(int(lags[0]), int(lengths.max(initial=0)), int(lags[0])):
    at = np.flatnonzero(ruled & (step >= t) & (step < t + lags[0]))
    seq[at] = echoes[seq[at - lag_of[at]]]
  names = np.array([f"u{u}" for u in range(cfg.num_users)])
  kinds = {name: group_name(int(lags[g])) for name, g in zip(names.tolist(), group.tolist())}
  return Interactions(users=np.repeat(names, lengths), items=raw_of[seq],
                      timestamps=(np.repeat(starts, lengths) + step).astype(np.float64),
                      source=f"synthetic(graded {tuple(int(x) for x in lags)}, seed={cfg.seed}, "
                             f"users={cfg.num_users})",
                      user_kinds=kinds)


def _apply_rules(cfg, seq, follow, draw, offsets, deep, successors, echoes, themes,
                 theme_members, theme_cdfs) -> None:
  """Applies the shallow and deep rules in place, for every user at once. A step reads only
  earlier steps, final by then: the shallow rule (s_t from s_{t-1}, s_{t-2}) goes one step at a
  time, the deep rule (s_t from s_{t-lag}) `lag` steps at a time."""
  lengths = np.diff(offsets)
  shallow_start, shallow_len = offsets[:-1][~deep], lengths[~deep]
  for t in range(2, int(shallow_len.max(initial=0))):
    at = shallow_start[shallow_len > t] + t                       # [users] flat positions of t
    at = at[follow[at] < cfg.follow_prob]
    seq[at] = successors[seq[at - 1], seq[at - 2] % 2]
  deep_start, deep_len = offsets[:-1][deep], lengths[deep]
  longest = int(deep_len.max(initial=0))
  for t in range(cfg.lag, longest, cfg.lag):
    steps = np.arange(t, min(t + cfg.lag, longest))                # [k]
    at = (deep_start[:, np.newaxis] + steps)[steps < deep_len[:, np.newaxis]]  # flat positions
    at = at[follow[at] < cfg.theme_prob]
    source = seq[at - cfg.lag]
    if cfg.deep_rule == "echo":
      seq[at] = echoes[source]
      continue
    theme = themes[source]
    for th in np.unique(theme):
      rows = at[theme == th]
      pick = np.minimum(np.searchsorted(theme_cdfs[th], draw[rows]), len(theme_members[th]) - 1)
      seq[rows] = theme_members[th][pick]


def _place_every_item(cfg, seq, follow, step, deep) -> None:
  """`every_item`: a permutation of all items at num_items random free positions (in place)."""
  free = np.where(deep, (step < cfg.lag) | (follow >= cfg.theme_prob),
                  (step < 2) | (follow >= cfg.follow_prob))
  positions = np.flatnonzero(free)
  if len(positions) < cfg.num_items:
    raise ValueError(
        f"synthetic: every_item needs at least num_items = {cfg.num_items} free positions (no "
        f"rule sets them), the log has {len(positions)} in {len(seq)} interactions. Fix: raise "
        "data.synthetic.num_users or the lengths, or lower follow_prob / theme_prob.")
  rng = np.random.default_rng([cfg.seed, 2])  # own stream: the rest of the log is unchanged
  seq[rng.choice(positions, size=cfg.num_items, replace=False)] = rng.permutation(cfg.num_items)


def _check_lengths(cfg: SyntheticConfig) -> None:
  if not 1 <= cfg.min_length <= cfg.max_length:
    raise ValueError(f"synthetic: need 1 <= min_length <= max_length, got {cfg.min_length}, "
                     f"{cfg.max_length}.")


def _zipf_law(n: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
  """Item popularity ∝ 1 / rank^exponent: (the weights [n], their cdf [n])."""
  popularity = 1.0 / np.arange(1, n + 1) ** exponent
  return popularity, np.cumsum(popularity / popularity.sum())


def _zipf(rng: np.random.Generator, cdf: np.ndarray, shape) -> np.ndarray:
  """Item indices drawn from the popularity cdf ([n]) with the given shape."""
  return np.minimum(np.searchsorted(cdf, rng.random(shape)), len(cdf) - 1)
