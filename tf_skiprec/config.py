"""The config schema: dataclasses, their parsing (JSON, `--override key=value`) and `validate()`.

A `Config` says what a run computes (data, model, policy, training, export) and how it runs
(`runtime`: strategy, progress bar, steps per traced loop, summaries; a run may resume with other
runtime values). The
named experiments are in tf_skiprec/experiments/. `validate()` checks every enumerated field,
every range and the few rules between fields (tf_skiprec/config_rules.py), and names the field,
the valid values and the fix in one ConfigError; train.py and `run(config, workdir)`
(tf_skiprec.training) call it before anything else, so a bad value fails in seconds, not after
a pretrain stage.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from tf_skiprec.config_rules import problems
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
  # The graded log: one group of users per lag L, s_t = echo(s_{t-L}) with P theme_prob. Empty:
  # the two-kind log above (shallow/deep; deep_fraction, lag, deep_rule, follow_prob apply).
  group_lags: tuple[int, ...] = ()


@dataclasses.dataclass
class DataConfig:
  dataset: str = "synthetic"  # "synthetic", or FORMAT:PATH, FORMAT in recbole|movielens|csv|sasrec
  max_len: int = 50           # history window (items)
  min_interactions: int = 3   # users with fewer are dropped (and counted)
  user_col: str = "user_id"   # generic CSV only
  item_col: str = "item_id"
  time_col: str = "timestamp"
  sep: str = ""               # generic CSV only; "" = sniff
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


@dataclasses.dataclass
class ModelConfig:
  backbone: str = "nextitnet"          # a name in tf_skiprec.backbones.REGISTRY: "nextitnet"
                                       # (NextItNet+) or "sasrec" (self-attention blocks)
  channels: int = 64
  num_blocks: int = 8
  kernel_size: int = 3                 # nextitnet: each convolution's width
  dilations: tuple[int, ...] = (1, 4)  # nextitnet: repeated over the blocks: d = 1,4,1,4,...
  num_heads: int = 2                   # sasrec: attention heads (channels must be a multiple)
  inner_size: int = 0                  # sasrec: the feed-forward layer's width (0: channels)
  activation: str = "relu"             # sasrec: the feed-forward layer's, "relu" or "gelu" (exact,
                                       # erf: RecBole's and BERT4Rec's)
  dropout: float = 0.0                 # inside each residual branch
  embedding_dropout: float = 0.0
  tie_embeddings: bool = False
  final_norm: bool = False             # nextitnet: LayerNorm before the softmax head (sasrec,
                                       # a pre-LN transformer, always has it)
  block_drop: float = 0.0              # pretraining: P(skip) of each block, per sequence
  block_drop_mode: str = "independent"  # ... each block on its own, or "prefix": with P
                                        # block_drop the sequence runs only its first k blocks,
                                        # k uniform in 1..N-1 (depth that is good at any cut),
                                        # or "prefix_log": k log-uniform, P(k) ~ log((k+1)/k)


@dataclasses.dataclass
class PolicyConfig:
  """SkipRec's policy network and how it is trained (modes "gumbel" and "rl")."""
  body: str = "cnn"                  # "cnn" (2 NextItNet+ blocks), "gru", or "pool" (cheap:
                                     # pooled embeddings, all and the last 8, one dense layer)
  dilations: tuple[int, ...] = (1, 4)  # "cnn": its blocks' dilations; a block of dilation d sees
                                       # 6d steps back, so (1, 4) sees 30 and (1, 8) 54
  learning_rate: float = 1e-3        # the policy's own Adam
  initial_keep_prob: float = 0.9     # start near the pretrained "keep everything"
  batch_norm: bool = True            # standardise the pooled history across users (policy.py)
  threshold: float = 0.5             # evaluation/serving: keep block i iff P(keep_i) >= threshold
  # evaluation/serving: and each user runs at most its max_blocks most probable blocks (the
  # export's default max_blocks); 0 = no cap.
  max_blocks: int = 0
  # gumbel: loss = recommendation loss + compute term on the mean usage (executed blocks / N):
  #   cost "quadratic": penalty * (usage - budget)^2;
  #   cost "lagrangian": lambda * (usage - budget), lambda >= 0 raised by dual ascent
  #   (lambda += dual_lr * (usage - budget) after every step) until the budget holds.
  # The compute a request may use, as a fraction of the full backbone's: its blocks' usage
  # (executed blocks / N) + the policy network's own cost (compute.policy_share: ~2 / N for the
  # cnn body). The blocks aim at budget - that share (gumbel); model selection: gumbel, rl.
  budget: float = 0.5
  budget_counts_policy: bool = True  # false: the budget is the blocks' usage alone (runs from
                                     # before issue 15 resume with false)
  budget_anneal_steps: int = 0       # the blocks' target falls linearly from 1 to theirs
  # gumbel (and rl's gumbel warm-up epochs; pretrain: not read): what the budget term (and
  # user_charge) averages the decisions over: "windows", the training batch's windows, so a user
  # counts as often as it has windows (with train.window_stride=1, once per item); "users", a
  # second batch of training windows drawn with every user equally likely, each at one of its
  # longest windows (data/pipeline.py, user_balanced), as validation, model selection,
  # calibration and serving count them (one history per user); "latest", the same users, each
  # at its validation history itself (user_latest: the latest training window's inputs shifted
  # one item later, so ending at the user's last training item; users with a training window).
  # "latest" fits the budget to those rows: on ML-100k's 4-block SASRec, 2.0 blocks on
  # validation, 2.17 on test (BUILD_NOTES.md, issue 17, seventeenth session).
  budget_over: str = "windows"
  budget_slack: float = 0.05         # model selection (gumbel, rl): an epoch is within budget
                                     # if its usage + the policy's share <= budget + slack
  # Model selection when no epoch is within budget: NDCG@10 * (1 - selection_lambda * usage);
  # 0.5: 10 points more usage must buy > ~5% relative NDCG@10 (training/selection.py).
  selection_lambda: float = 0.5
  cost: str = "quadratic"
  penalty: float = 20.0
  # gumbel: + user_charge * the batch mean of log(k_u + 1), k_u the blocks user u runs: a
  # per-user charge whose price per block falls with the blocks a user already runs (the k-th
  # costs ~ user_charge / k), so a user whose next block gains little drops it, and the users who
  # need depth keep it; the budget term still sets the mean. 0 = off.
  user_charge: float = 0.0
  dual_lr: float = 1.0
  # gumbel: + entropy_weight * mean binary entropy of P(keep), which pushes the policy to decide
  # (P(keep) near 0 or 1), so that the deterministic decisions at evaluation match training's.
  entropy_weight: float = 0.0
  entropy_ramp_steps: int = 0        # the weight rises linearly from 0 over these steps
  # gumbel/rl: in-place distillation (as universally slimmable networks train their
  # sub-networks): each step also runs the full backbone (every block), trains it on the labels,
  # and pulls the chosen blocks' softmax towards its detached softmax: + distill_weight * (the
  # full backbone's cross-entropy + KL(full || chosen)), over every counted position. Without it
  # the fine-tuning spends the full path, which lower thresholds, larger caps and the `full`
  # signature run. In gumbel the KL also reaches the policy (straight-through), in rl not. One
  # more backbone pass a step; the full softmax only (train.loss="full").
  distill_weight: float = 0.0
  tau_start: float = 5.0             # Gumbel-softmax temperature, annealed ...
  tau_end: float = 0.5
  tau_schedule: str = "exponential"  # ... "exponential", "linear" or "constant"
  tau_anneal_steps: int = 2000
  # rl: REINFORCE; advantage = R(sampled decisions) - R(greedy decisions) (rewards.py):
  #   reward "likelihood": per window, the mean log-likelihood of its targets (every counted
  #     position, full softmax) - compute_cost * usage;
  #   reward "quadratic": 1 - usage^2 if the window's last target is in the top k, else -gamma;
  #   reward "reference": the release's 1 - (1 - usage)^2 (top k), else -gamma (it rewards
  #     running MORE blocks).
  reward: str = "likelihood"
  # likelihood: the nats of mean log-likelihood that running every block (usage 1) must earn; a
  # block of N is worth running for a user iff it raises that user's mean log-likelihood by more
  # than compute_cost / N. 0.5: halving usage is worth 0.25 nats (the targets' geometric-mean
  # probability x 0.78). Measured on runs/default/pretrain (16 blocks, synthetic log): skipping
  # every block costs 2.9 nats, skipping one 0.02 to 1.6 (median 0.07), against the 0.03 per
  # block that 0.5 charges: it skips the blocks that help a user little, not the backbone.
  compute_cost: float = 0.5
  compute_cost_ramp_steps: int = 0   # the charge rises linearly from 0 over these steps, so that
                                     # deep users keep blocks until the backbone uses them
  # rl: divide the advantages by their standard deviation over the (per-replica) batch
  # (BlockDrop, SkipNet, PPO): every step's update has one scale, whatever the reward's units and
  # however rare the samples that differ from the greedy decisions; the mean is not subtracted
  # (rewards.normalized_advantage says why).
  advantage_norm: bool = True
  reward_top_k: int = 5              # quadratic, reference: the k of "in the top k"
  gamma: float = 1.0                 # quadratic, reference: the reward of a miss is -gamma
  warmup_epochs: int = 0             # rl only: Gumbel epochs before REINFORCE
  freeze_backbone_epochs: int = 0    # gumbel/rl: first epochs train the policy alone

  @property
  def cap(self) -> int | None:
    """max_blocks as an evaluation's cap: None for 0 (no cap)."""
    return self.max_blocks or None


@dataclasses.dataclass
class TrainConfig:
  mode: str = "pretrain"             # "pretrain" (backbone alone), "gumbel" or "rl"
  init_from: str = ""                # gumbel/rl: a pretrain work directory to start from
  # A run of the same backbone with fewer blocks whose best checkpoint this run's deeper backbone
  # grows from (StackRec stacking, tf_skiprec/training/grow.py); "" = start from scratch.
  grow_from: str = ""
  # gumbel/rl: after training, raise the keep threshold (policy.threshold) to the lowest that
  # holds the blocks' budget on validation (the sweep's, then bisected: end_of_run.py,
  # calibrated_threshold); the test metrics and the export use it.
  calibrate_threshold: bool = False
  # gumbel/rl: if the blocks run over their budget on validation, cap them: policy.max_blocks =
  # the largest m whose validation usage holds it (calibrated_max_blocks). With
  # calibrate_threshold too, whichever of the two has the higher validation NDCG@10 is applied
  # (end_of_run.calibrate); the test metrics and the export use it.
  calibrate_max_blocks: bool = False
  pretrain_epochs: int = 0           # gumbel/rl without init_from: pretrain first, in workdir/pretrain
  pretrain_learning_rate: float = 0.0  # that pretrain stage's backbone lr; 0 = learning_rate
  pretrain_patience: int = 0         # that pretrain stage's patience; 0 = patience
  # Training windows (data/splits.py) of data.max_len + 1 items start every window_stride items
  # from the end of each user's training part; 0 = data.max_len (end to end). Below max_len they
  # overlap, and each label counts once, in the window where it has the most history (at least
  # max_len - window_stride items), so that a policy deciding per window sees the context of
  # every label it is trained on. More windows: about max_len / window_stride times the cost.
  window_stride: int = 0
  pretrain_window_stride: int = 0    # the pretrain stage's window_stride (0 = end to end)
  batch_size: int = 64
  eval_batch_size: int = 256
  learning_rate: float = 1e-3
  weight_decay: float = 0.0          # decoupled (AdamW); 0 = Adam
  clipnorm: float = 0.0              # 0 = no clipping
  # Validation, model selection, the best checkpoint, the test and the export use an exponential
  # moving average of the trainable weights with this decay (training/averaging.py); 0 = the
  # weights themselves. A work directory resumes only with the value it was started with.
  ema_decay: float = 0.0
  epochs: int = 30
  patience: int = 5                  # epochs without a better model-selection score
  loss: str = "full"                 # "full" softmax or "sampled" softmax
  num_sampled: int = 1000            # negatives per step for the sampled softmax
  checkpoint_every_steps: int = 0    # 0 = at the end of every epoch only
  max_checkpoints: int = 3
  seed: int = 0


@dataclasses.dataclass
class RuntimeConfig:
  """How a run executes; a run may resume with other values. The progress bar, the steps per
  loop and the summaries change no result, bit for bit; the strategy splits each batch across
  the devices it runs on, which changes float rounding (and, with dropout, the draws)."""
  strategy: str = "default"          # "default" (one device), "mirrored" (this machine's
                                     # devices) or "multiworker" (TF_CONFIG's cluster)
  progress: bool = True              # a progress bar per epoch
  steps_per_loop: int = 1            # training steps per tf.function call (one host sync each)
  summary_every_steps: int = 10      # TensorBoard training scalars (a loop's means) at the end
                                     # of each loop that reaches a multiple of this


@dataclasses.dataclass
class ExportConfig:
  """Where a finished run exports its best model for TF Serving (tf_skiprec/export/)."""
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
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> "Config":
    return _from_dict(cls, _moved_fields(values), where)

  @classmethod
  def from_json_file(cls, path: str) -> "Config":
    try:
      with open(path) as f:
        values = json.load(f)
    except FileNotFoundError:
      raise ConfigError(f"{path}: config file not found. Fix: pass an existing JSON file to --config.")
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg}). Fix: correct the file.")
    if not isinstance(values, dict):
      raise ConfigError(f"{path}: a config file holds one JSON object. Fix: write it as "
                        "workdir/config.json is written.")
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
    if tuple(parts) in _MOVED:  # a field's old place (train.strategy) still names it
      parts = list(_MOVED[tuple(parts)])
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

  def validate(self, *, num_items: int | None = None) -> "Config":
    """Checks every field's type, every enumerated value, every range and the rules between
    fields (and, given the catalogue's `num_items` once the data is read, what depends on it);
    raises one ConfigError listing each problem with its field, valid values and fix. Returns
    self."""
    found = problems(self, num_items)
    if found:
      raise ConfigError("invalid config" + (f" {self.name!r}" if self.name else "") + ":\n  "
                        + "\n  ".join(found))
    return self


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


# Fields that moved between sections; a config file written before the move still loads.
_MOVED = {("train", "strategy"): ("runtime", "strategy"),
          ("train", "progress"): ("runtime", "progress")}


def _moved_fields(values: dict[str, Any]) -> dict[str, Any]:
  values = json.loads(json.dumps(values))  # a deep copy
  for (section, name), (new_section, new_name) in _MOVED.items():
    if isinstance(values.get(section), dict) and name in values[section]:
      value = values[section].pop(name)
      values.setdefault(new_section, {}).setdefault(new_name, value)
  return values


def _from_dict(cls, values: dict[str, Any], where: str):
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  if not isinstance(values, dict):
    raise ConfigError(f"{where}: expected an object of {cls.__name__} fields, got "
                      f"{type(values).__name__}. Fix: write it as {{\"field\": value, ...}}.")
  unknown = set(values) - names
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} in {cls.__name__}. "
                      f"Fix: use only {sorted(names)}.")
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
    elif typing.get_origin(hint) is tuple and isinstance(value, list):
      kwargs[name] = tuple(value)
    else:
      kwargs[name] = value
  return cls(**kwargs)
