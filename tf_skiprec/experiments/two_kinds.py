"""The first `make train` (until issue 14): SkipRec on the two-kind synthetic data. About 5 min on
2 cores (measured 5 min 02 s to 6 min 08 s from a fresh clone, the venv build included).

  python train.py --experiment=two_kinds --workdir=runs/two_kinds

2,000 users and 300 items; shallow users' next item follows from their last two items, deep
users' from the item 24 steps back ("echo" rule). 16 blocks x 64 channels: pretrain (up to 15
epochs), then the Gumbel policy with the blocks at 0.1 (8 epochs; target annealed from 1, entropy
term ramped in). Shallow users need one dilation-1 block, deep users a dilation-1 and a dilation-4
block. Exports to saved_models/skiprec/<version>/.
"""

from __future__ import annotations

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.config import Config
from tf_skiprec.experiments.registry import register


@register("two_kinds")
def two_kinds() -> Config:
  config = Config()
  config.data.synthetic.num_items = 300
  config.data.synthetic.num_themes = 5
  config.data.synthetic.deep_rule = "echo"
  config.model.num_blocks = 16
  config.train.learning_rate = 2e-3
  config.train.mode = "gumbel"
  config.train.pretrain_epochs = 15
  config.train.epochs = 8
  config.policy.budget = budget_for_usage(config, 0.1)  # 0.1 of the blocks + the policy's 0.125
  config.policy.budget_anneal_steps = 150  # ~3 epochs: no collapse to 0 blocks at the start
  config.policy.entropy_weight = 1.0       # decisive policies: evaluation's decisions = training's
  config.policy.entropy_ramp_steps = 200
  config.export.base_dir = "saved_models"  # saved_models/skiprec/<version>/, for TF Serving
  return config
