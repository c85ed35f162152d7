"""`make train`: SkipRec on the graded synthetic data, and its REINFORCE twin.

  python train.py --experiment=default --workdir=runs/default       # Gumbel
  python train.py --experiment=default_rl --workdir=runs/default_rl \
      --override train.init_from=runs/default/pretrain               # REINFORCE, same backbone

The data: 2,000 users in four equal groups, 300 items. In the group of lag L (2, 8, 20, 32), the
next item is, with probability 0.85, the fixed "echo" of the item L steps back (else a popular
item), so the context a user needs lies exactly L steps back. The backbone: 32 NextItNet+
blocks of 32 channels, dilations 1, 2 repeated; a block of dilation d sees d * 0..6 steps back,
so the fewest blocks that see L - 1 steps before the last item are 1, 2, 3 and 4
(backbone.blocks_to_reach; the table and blocks_by_group.png show them beside the blocks run).
A LayerNorm before the softmax head (model.final_norm) makes the scores' scale independent of the
number of blocks run, so that one block nearly saturates the lag-2 group (BUILD_NOTES.md, issue
14, fourth pass).

Pretraining (up to PRETRAIN_EPOCHS) uses prefix stochastic depth: half the sequences run only their
first k blocks, k uniform in 1..31, so that every depth is a usable model and the first blocks
carry what most users need. Then SkipRec-Gumbel with the blocks at 0.15 (usage target annealed from
1 over ~7 epochs, entropy term ramped in), after 2 epochs of the policy alone on the frozen
backbone; the backbone goes on training at 2e-3. The SkipRec stage trains on overlapping windows
(train.window_stride 32 of 64): the policy decides once per window, and with windows cut end to end
only 42% of the lag-32 group's labels had their context in the window (62% for lag 20), so depth
was worth less to the group that needs the most of it (BUILD_NOTES.md, issue 14, fifth pass); now
every label past a user's 32nd item has at least 32 items of history in its window. The budget
counts the cnn policy's own cost too (2.0 blocks' worth, 0.063): 0.213 in all. Model selection: the
best validation NDCG@10 among the epochs at usage <= 0.25 (the blocks' 0.15 + slack 0.10).
`default_rl` follows `default` for 8 epochs, then trains the policy by REINFORCE for the other 6
(SkipNet's hybrid RL). The recipes' measurements: BUILD_NOTES.md, issue 14.
Exports to saved_models/skiprec/<version>/.
"""

from __future__ import annotations

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.config import Config
from tf_skiprec.experiments.registry import register

GROUP_LAGS = (2, 8, 20, 32)
PRETRAIN_EPOCHS = 16
WARMUP_EPOCHS = 8                          # default_rl: Gumbel epochs before REINFORCE


def graded_backbone() -> Config:
  """The data, the 32-block backbone and its pretraining (train.mode "pretrain")."""
  config = Config()
  s = config.data.synthetic
  s.num_items, s.group_lags, s.min_length, s.max_length = 300, GROUP_LAGS, 60, 120
  config.data.max_len = 64                 # holds the deepest group's context
  config.model.num_blocks = 32
  config.model.channels = 32
  config.model.dilations = (1, 2)
  config.model.final_norm = True           # the head, not the depth, sets the scores' scale
  config.model.block_drop = 0.5
  config.model.block_drop_mode = "prefix"
  config.train.learning_rate = 3e-3
  config.train.epochs = PRETRAIN_EPOCHS
  config.train.patience = 5
  return config


@register("default")
def default() -> Config:
  config = graded_backbone()
  config.train.mode = "gumbel"
  config.train.pretrain_epochs = PRETRAIN_EPOCHS
  config.train.pretrain_learning_rate = 3e-3
  config.train.learning_rate = 2e-3        # the backbone goes on learning the deep groups
  config.train.epochs = 14
  config.train.patience = 14               # the usage target falls for 7 epochs: no early stop
  config.policy.learning_rate = 3e-3
  config.train.window_stride = 32          # SkipRec stage: each label with >= 32 items of history
  config.train.pretrain_window_stride = 0  # pretraining: windows end to end (its time budget)
  config.policy.dilations = (1, 8)         # sees 54 steps back: every group's context
  config.policy.freeze_backbone_epochs = 2  # the policy learns first on the pretrained backbone
  # The blocks' share of the compute: 0.15 (4.8 of 32), + the cnn policy's own 0.063 (2.0 blocks'
  # worth) = a budget of 0.213 of the full backbone.
  config.policy.budget = budget_for_usage(config, 0.15)
  config.policy.budget_slack = 0.10        # model selection: validation usage <= 0.25, the
                                           # quadratic penalty settles the decisions above 0.15
  config.policy.budget_anneal_steps = 420  # ~7 epochs: the backbone follows the cut
  config.policy.entropy_weight = 0.1       # decisive policies, but not before they have learned
  config.policy.entropy_ramp_steps = 420
  config.export.base_dir = "saved_models"  # saved_models/skiprec/<version>/, for TF Serving
  return config


@register("default_rl")
def default_rl() -> Config:
  """SkipRec-RL on `default`'s data and backbone, trained as SkipNet trains its gates (hybrid RL):
  the first WARMUP_EPOCHS are `default`'s Gumbel epochs (2 of them policy-only), where the
  relaxation's gradient assigns users to blocks; then REINFORCE (the likelihood reward, compute
  charge 2.0) trains the policy, and the backbone under its samples, for the rest of the 14.
  Pretrains in <workdir>/pretrain, or starts from --override train.init_from=<a pretrain work
  directory>. From the pretrained backbone, REINFORCE alone (policy.warmup_epochs=0) reached
  0.64 against Gumbel's 0.75 on seed 0, before the head's LayerNorm (BUILD_NOTES.md, issue
  14)."""
  config = default()
  config.train.mode = "rl"
  config.policy.warmup_epochs = WARMUP_EPOCHS
  config.policy.compute_cost = 2.0         # nats of mean log-likelihood that all 32 blocks must
                                           # earn: at 0.5 the policy settled at 20 of 32 blocks
  return config
