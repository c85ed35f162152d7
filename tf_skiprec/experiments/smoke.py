"""A tiny run: the tests' starting point, and a check that everything runs. About 15 s.

  python train.py --experiment=smoke --workdir=/tmp/smoke

120 synthetic users, 80 items, 4 blocks x 16 channels, 2 epochs of pretraining.
"""

from __future__ import annotations

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.config import Config, ModelConfig, SyntheticConfig
from tf_skiprec.experiments.registry import register


@register("smoke")
def smoke() -> Config:
  config = Config()
  config.data.max_len = 20
  config.data.synthetic = SyntheticConfig(num_users=120, num_items=80, num_themes=4,
                                          min_length=20, max_length=40, lag=8)
  config.model = ModelConfig(channels=16, num_blocks=4)
  config.train.batch_size = 32
  config.train.epochs = 2
  config.runtime.progress = False
  # In gumbel or rl: the blocks at 0.5, + the cnn policy's own 2.0 blocks' worth of 4 (a budget of
  # 1.001: on 4 blocks the policy costs as much as the half it saves).
  config.policy.budget = budget_for_usage(config, 0.5)
  return config
