"""Dataclass configs and the registry of named experiments.

Every experiment states its command line and its cost on this project's 2-core CPU machine.
`run(config, workdir)` (tf_skiprec.training) is the one entry point; the CLI, the tests and the
tuner build a `Config` here and pass it on.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Callable

from tf_skiprec.errors import ConfigError


@dataclasses.dataclass
class SyntheticConfig:
  """The built-in synthetic log (see tf_skiprec.data.synthetic)."""
  num_users: int = 2000
  num_items: int = 1000
  num_themes: int = 10
  deep_fraction: float = 0.5
  min_length: int = 40
  max_length: int = 90
  lag: int = 24               # deep users: item t is set by item t - lag
  deep_rule: str = "theme"    # deep users: "theme" (item t - lag sets the theme) or "echo"
  zipf_exponent: float = 1.0
  follow_prob: float = 0.8    # shallow users: P(next item is the successor of the last two)
  theme_prob: float = 0.85    # deep users: P(next item follows the rule from `lag` steps back)
  seed: int = 0
  every_item: bool = False    # every catalogue item occurs (at free positions; large catalogues)


@dataclasses.dataclass
class DataConfig:
  dataset: str = "synthetic"  # "synthetic", or FORMAT:PATH with FORMAT in recbole|movielens|csv
  max_len: int = 50           # history window (items)
  min_interactions: int = 3   # users with fewer are dropped (and counted)
  user_col: str = "user_id"   # generic CSV only
  item_col: str = "item_id"
  time_col: str = "timestamp"
  sep: str = ""               # generic CSV only; "" = sniff
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


@dataclasses.dataclass
class ModelConfig:
  channels: int = 64
  num_blocks: int = 8
  kernel_size: int = 3
  dilations: tuple[int, ...] = (1, 4)  # repeated over the blocks: d = 1,4,1,4,...
  dropout: float = 0.0                 # inside each residual branch
  embedding_dropout: float = 0.0
  tie_embeddings: bool = False
  block_drop: float = 0.0              # pretraining: P(skip) of each block, per sequence


@dataclasses.dataclass
class PolicyConfig:
  """SkipRec's policy network and how it is trained (modes "gumbel" and "rl")."""
  body: str = "cnn"                  # "cnn" (2 NextItNet+ blocks, dilations 1,4) or "gru"
  learning_rate: float = 1e-3        # the policy's own Adam
  initial_keep_prob: float = 0.9     # start near the pretrained "keep everything"
  batch_norm: bool = True            # standardise the pooled history across users (policy.py)
  threshold: float = 0.5             # evaluation/serving: keep block i iff P(keep_i) >= threshold
  # gumbel: loss = recommendation loss + compute term on the mean usage (executed blocks / N):
  #   cost "quadratic": penalty * (usage - budget)^2;
  #   cost "lagrangian": lambda * (usage - budget), lambda >= 0 raised by dual ascent
  #   (lambda += dual_lr * (usage - budget) after every step) until the budget holds.
  budget: float = 0.5                # target mean usage
  budget_anneal_steps: int = 0       # the target falls linearly from 1 to `budget` over these
  budget_slack: float = 0.05         # model selection: an epoch is within budget if its
                                     # validation usage <= budget + slack (0 = strict)
  cost: str = "quadratic"
  penalty: float = 20.0
  dual_lr: float = 1.0
  # gumbel: + entropy_weight * mean binary entropy of P(keep), which pushes the policy to decide
  # (P(keep) near 0 or 1), so that the deterministic decisions at evaluation match training's.
  entropy_weight: float = 0.0
  entropy_ramp_steps: int = 0        # the weight rises linearly from 0 over these steps
  tau_start: float = 5.0             # Gumbel-softmax temperature, annealed ...
  tau_end: float = 0.5
  tau_schedule: str = "exponential"  # ... "exponential", "linear" or "constant"
  tau_anneal_steps: int = 2000
  # rl: REINFORCE, self-critical baseline; reward 1 - usage^2 if the target is in the top k
  reward: str = "quadratic"          # or "reference": the release's 1 - (1 - usage)^2
  reward_top_k: int = 5
  gamma: float = 1.0                 # reward when the target is not in the top k: -gamma
  warmup_epochs: int = 0             # rl only: Gumbel epochs before REINFORCE
  freeze_backbone_epochs: int = 0    # gumbel/rl: first epochs train the policy alone


@dataclasses.dataclass
class TrainConfig:
  mode: str = "pretrain"             # "pretrain" (backbone alone), "gumbel" or "rl"
  init_from: str = ""                # gumbel/rl: a pretrain work directory to start from
  pretrain_epochs: int = 0           # gumbel/rl without init_from: pretrain first, in workdir/pretrain
  pretrain_learning_rate: float = 0.0  # that pretrain stage's backbone lr; 0 = learning_rate
  pretrain_patience: int = 0         # that pretrain stage's patience; 0 = patience
  batch_size: int = 64
  eval_batch_size: int = 256
  learning_rate: float = 1e-3
  weight_decay: float = 0.0          # decoupled (AdamW); 0 = Adam
  clipnorm: float = 0.0              # 0 = no clipping
  epochs: int = 30
  patience: int = 5                  # epochs without a better validation NDCG@10
  loss: str = "full"                 # "full" softmax or "sampled" softmax
  num_sampled: int = 1000            # negatives per step for the sampled softmax
  checkpoint_every_steps: int = 0    # 0 = at the end of every epoch only
  max_checkpoints: int = 3
  seed: int = 0
  strategy: str = "default"          # "default" (one device), "mirrored" (this machine's
                                     # devices) or "multiworker" (TF_CONFIG's cluster)
  progress: bool = True


@dataclasses.dataclass
class ExportConfig:
  """Where a finished run exports its best model for TF Serving (tf_skiprec/export.py)."""
  base_dir: str = ""                 # "" = no export; saved_models/<model_name>/<version>/ below
  model_name: str = "skiprec"
  top_k: int = 10                    # serving_default's default k
  num_check_histories: int = 64      # validation histories the export is checked and warmed on


@dataclasses.dataclass
class Config:
  name: str = "default"
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> "Config":
    return _from_dict(cls, values, where)

  @classmethod
  def from_json_file(cls, path: str) -> "Config":
    try:
      with open(path) as f:
        values = json.load(f)
    except FileNotFoundError:
      raise ConfigError(f"{path}: config file not found. Fix: pass an existing JSON file to --config.")
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg}). Fix: correct the file.")
    return cls.from_dict(values, where=path)

  def override(self, assignment: str) -> "Config":
    """Applies one `dotted.key=value` override in place and returns self."""
    if "=" not in assignment:
      raise ConfigError(f"--override {assignment!r}: expected key=value, e.g. model.num_blocks=32.")
    key, value = assignment.split("=", 1)
    owner, name, hint = self.field(key.strip(), f"--override {assignment!r}")
    setattr(owner, name, parse_value(value, hint, key))
    return self

  def field(self, key: str, where: str) -> tuple[Any, str, Any]:
    """`dotted.key` -> (the dataclass holding it, its field name, its type); a ConfigError that
    names the valid fields if there is no such field (`where` starts the message)."""
    parts = key.split(".")
    target: Any = self
    for i, part in enumerate(parts):
      fields = {f.name for f in dataclasses.fields(target)}
      if part not in fields:
        path = ".".join(parts[:i]) or "config"
        raise ConfigError(f"{where}: {path} has no field {part!r}. Fix: use one of "
                          f"{sorted(fields)}.")
      if i < len(parts) - 1:
        target = getattr(target, part)
    return target, parts[-1], typing.get_type_hints(type(target))[parts[-1]]


def parse_value(text: str, hint: Any, key: str) -> Any:
  """Parses an override value (text) for the field `key` of type `hint`."""
  text = text.strip()
  try:
    if hint is bool:
      if text.lower() in ("1", "true", "yes"):
        return True
      if text.lower() in ("0", "false", "no"):
        return False
      raise ValueError(text)
    if hint is int:
      return int(text)
    if hint is float:
      return float(text)
    if typing.get_origin(hint) is tuple:
      return tuple(int(x) for x in text.split(",") if x.strip())
    return text
  except ValueError:
    raise ConfigError(f"--override {key}={text!r}: not a valid {getattr(hint, '__name__', hint)}.")


def _from_dict(cls, values: dict[str, Any], where: str):
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(values) - names
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} in {cls.__name__}. "
                      f"Fix: use only {sorted(names)}.")
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
    elif typing.get_origin(hint) is tuple:
      kwargs[name] = tuple(value)
    else:
      kwargs[name] = value
  return cls(**kwargs)


# ------------------------------------------------------------------------------------------------
# Named experiments.

EXPERIMENTS: dict[str, Callable[[], Config]] = {}


def register(name: str):
  def wrap(fn: Callable[[], Config]) -> Callable[[], Config]:
    EXPERIMENTS[name] = fn
    return fn
  return wrap


def get_config(name: str) -> Config:
  if name not in EXPERIMENTS:
    raise ConfigError(f"--experiment={name!r} is not registered. Fix: use one of {sorted(EXPERIMENTS)}.")
  config = EXPERIMENTS[name]()
  config.name = name
  return config


@register("default")
def default() -> Config:
  """`make train`: SkipRec on the synthetic data (2,000 users, 300 items, deep users on the
  "echo" rule 24 items back), 16 blocks x 64 channels: pretrain (up to 15 epochs), then the
  Gumbel policy at a 0.1 budget (8 epochs; target annealed from 1, entropy term ramped in).
  Shallow users need one dilation-1 block, deep users a dilation-1 and a dilation-4 block.

  python train.py --experiment=default --workdir=runs/default
  """
  config = Config()
  config.data.synthetic.num_items = 300
  config.data.synthetic.num_themes = 5
  config.data.synthetic.deep_rule = "echo"
  config.model.num_blocks = 16
  config.train.learning_rate = 2e-3
  config.train.mode = "gumbel"
  config.train.pretrain_epochs = 15
  config.train.epochs = 8
  config.policy.budget = 0.1
  config.policy.budget_anneal_steps = 150  # ~3 epochs: no collapse to 0 blocks at the start
  config.policy.entropy_weight = 1.0       # decisive policies: evaluation's decisions = training's
  config.policy.entropy_ramp_steps = 200
  config.export.base_dir = "saved_models"  # saved_models/skiprec/<version>/, for TF Serving
  return config


@register("smoke")
def smoke() -> Config:
  """Tiny run for tests: `python train.py --experiment=smoke --workdir=/tmp/s`. About 15 s."""
  config = Config()
  config.data.max_len = 20
  config.data.synthetic = SyntheticConfig(num_users=120, num_items=80, num_themes=4,
                                          min_length=20, max_length=40, lag=8)
  config.model = ModelConfig(channels=16, num_blocks=4)
  config.train.batch_size = 32
  config.train.epochs = 2
  config.train.progress = False
  return config


@register("ml100k_10")
def ml100k_10() -> Config:
  """Peer configuration on ML-100k (10 blocks, dilations 1,4 x 5, 64 channels). About 2.5 min.

  python train.py --experiment=ml100k_10 --dataset=recbole:../shared/data/ml-100k --workdir=runs/m10

  Dropout 0.2 and Adam at lr 2e-3, chosen on validation NDCG@10 (bench/backbone_ml100k.py): best
  epoch ~14 after ~80 s of training, ~130 s training in all with patience 10, ~1 GB peak.
  """
  config = Config()
  config.data.dataset = "recbole:../shared/data/ml-100k"
  config.model.num_blocks = 10
  config.model.dropout = 0.2
  config.train.learning_rate = 2e-3
  config.train.epochs = 200
  config.train.patience = 10
  return config


@register("ml100k_32")
def ml100k_32() -> Config:
  """32 blocks x 64 channels on ML-100k. About 8 min.

  python train.py --experiment=ml100k_32 --dataset=recbole:../shared/data/ml-100k --workdir=runs/m32

  Dropout 0.3, AdamW at lr 2e-3 with weight decay 0.1, chosen on validation NDCG@10
  (bench/backbone_ml100k.py): best epoch ~11 after ~240 s of training, ~410 s in all, ~1.5 GB peak.
  """
  config = ml100k_10()
  config.model.num_blocks = 32
  config.model.dropout = 0.3
  config.train.learning_rate = 2e-3
  config.train.weight_decay = 0.1
  return config


def skiprec_finetune(config: Config, budget: float | None, mode: str = "gumbel") -> Config:
  """Turns an ML-100k pretrain config into SkipRec fine-tuning (in place): mode "gumbel" at
  `budget`, or "rl" (budget None: the reward trades accuracy for usage).

  The recipe measured in bench/skiprec_ml100k.py (BUILD_NOTES.md): the backbone at a tenth of its
  pretraining learning rate (at the pretrain's lr the best pretrained backbone overfits at once:
  valid NDCG@10 0.0674 -> 0.0587 in one epoch), up to 10 epochs with patience 4, the temperature
  annealed over ~15 epochs of ~40 steps, the usage target falling from 1 to the budget over ~2
  epochs and the entropy term rising over ~5. The pretraining settings stay with the pretrain
  stage (`train.pretrain_learning_rate`, `train.pretrain_patience`).
  """
  if config.train.mode != "pretrain":
    raise ConfigError(f"skiprec_finetune: {config.name!r} is already a {config.train.mode!r} "
                      "config. Fix: apply it once, to a pretrain config.")
  if (mode == "gumbel") != (budget is not None):
    raise ConfigError(f"skiprec_finetune: mode {mode!r} with budget {budget}. Fix: gumbel "
                      "takes a budget, rl none.")
  config.train.mode = mode
  config.train.pretrain_learning_rate = config.train.learning_rate
  config.train.pretrain_patience = config.train.patience
  config.train.learning_rate /= 10
  config.train.epochs = 10
  config.train.patience = 4
  config.policy.tau_anneal_steps = 600
  if budget is not None:
    config.policy.budget = budget
    config.policy.budget_anneal_steps = 80
    config.policy.entropy_weight = 1.0
    config.policy.entropy_ramp_steps = 200
  return config


@register("ml100k_10_sd")
def ml100k_10_sd() -> Config:
  """`ml100k_10` with stochastic depth: each block of each sequence is skipped with p = 0.2 in
  training (all blocks run at evaluation). About 3 min.

  python train.py --experiment=ml100k_10_sd --dataset=recbole:../shared/data/ml-100k --workdir=runs/sd10

  A regulariser for the full backbone, and blocks that are used to being skipped for SkipRec
  (bench/skiprec_ml100k.py: valid NDCG@10 0.0719 against 0.0707 without, 3 seeds).
  """
  config = ml100k_10()
  config.model.block_drop = 0.2
  return config


@register("ml100k_skiprec")
def ml100k_skiprec() -> Config:
  """SkipRec on ML-100k, the best recipe measured (bench/skiprec_ml100k.py, `gumbel40_10_sd`):
  pretrain `ml100k_10_sd` (stochastic depth), then the Gumbel policy at a 0.4 budget with the
  backbone fine-tuned at a tenth of the lr. About 4.5 min in all (measured 4 min 26 s; seed 0:
  test NDCG@10 0.0692 at 4.47 of 10 blocks).

  python train.py --experiment=ml100k_skiprec --dataset=recbole:../shared/data/ml-100k --workdir=runs/skip10

  Pretrains in <workdir>/pretrain (or starts from --override train.init_from=<a pretrain
  work directory>). Runs ~4.4 of 10 blocks per user.
  """
  config = skiprec_finetune(ml100k_10_sd(), budget=0.4)
  config.train.pretrain_epochs = 200
  return config


# ------------------------------------------------------------------------------------------------
# Large catalogues (issue 6).

def large_catalog_data(num_items: int, num_users: int = 300, seed: int = 0) -> SyntheticConfig:
  """A synthetic log in which every one of `num_items` items occurs (`every_item`): about 1.5
  interactions per item over `num_users` long histories, with weak rules (follow_prob and
  theme_prob 0.2) so that ~80% of the positions are free to hold the catalogue."""
  mean = 1.5 * num_items / num_users
  return SyntheticConfig(num_users=num_users, num_items=num_items,
                         min_length=max(3, round(0.8 * mean)), max_length=max(3, round(1.2 * mean)),
                         follow_prob=0.2, theme_prob=0.2, every_item=True, seed=seed)


@register("large_catalog")
def large_catalog() -> Config:
  """SkipRec on a 1,000,000-item catalogue with the sampled softmax (200 log-uniform negatives a
  step; no [positions, items] matrix in training): a synthetic log holding every item (100 users,
  1.5M interactions), 4 blocks x 8 channels, pretrain 1 epoch then the Gumbel policy 1 epoch,
  evaluated by full ranking over the million items. tests/test_large_catalog.py runs it with an
  export. About 60 s, 2.8 GB peak (measured 59 s with the export).

  python train.py --experiment=large_catalog --workdir=runs/large --override export.base_dir=saved_models

  What grows with the catalogue (training step, memory, evaluation, export, serving latency at
  10k, 100k and 1M items): bench/large_catalog.py and BUILD_NOTES.md.
  """
  config = Config()
  config.data.synthetic = large_catalog_data(1_000_000, num_users=100)
  config.model = ModelConfig(channels=8, num_blocks=4)
  config.train.loss = "sampled"
  config.train.num_sampled = 200
  config.train.batch_size = 2048     # 15 steps an epoch: each also updates every item's row
  config.train.mode = "gumbel"
  config.train.pretrain_epochs = 1
  config.train.epochs = 1
  config.train.progress = False
  config.export.model_name = "skiprec_large"
  return config
