"""SkipRec on a 1,000,000-item catalogue with the sampled softmax. About 60 s, 2.8 GB peak
(measured 59 s with the export).

  python train.py --experiment=large_catalog --workdir=runs/large --override export.base_dir=saved_models

200 log-uniform negatives a step, so training builds no [positions, items] matrix; a synthetic
log holding every item (100 users, 1.5M interactions), 4 blocks x 8 channels, pretrain 1 epoch
then the Gumbel policy 1 epoch, evaluated by full ranking over the million items.
tests/test_large_catalog.py runs it with an export. What grows with the catalogue (training step,
memory, evaluation, export, serving latency at 10k, 100k and 1M items): bench/large_catalog.py
and BUILD_NOTES.md.
"""

from __future__ import annotations

from tf_skiprec.compute import budget_for_usage
from tf_skiprec.config import Config, ModelConfig, SyntheticConfig
from tf_skiprec.experiments.registry import register


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
  config = Config()
  config.data.synthetic = large_catalog_data(1_000_000, num_users=100)
  config.model = ModelConfig(channels=8, num_blocks=4)
  config.train.loss = "sampled"
  config.train.num_sampled = 200
  config.train.batch_size = 2048     # 15 steps an epoch: each also updates every item's row
  config.train.mode = "gumbel"
  # Half the blocks; with the cnn policy's own 2.0 blocks' worth, the compute of the full backbone.
  config.policy.budget = budget_for_usage(config, 0.5)
  config.train.pretrain_epochs = 1
  config.train.epochs = 1
  config.runtime.progress = False
  config.export.model_name = "skiprec_large"
  return config
