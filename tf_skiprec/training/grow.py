"""A deep backbone grown from a trained shallower one: StackRec's stacking (Wang et al., "StackRec:
Efficient Training of Very Deep Sequential Recommender Models by Iterative Stacking", SIGIR 2021).

`train.grow_from=<a work directory>` starts this run's N-block backbone from the best checkpoint
of an n-block run (n < N) of the same backbone, width and data:
  - the embedding path (item table; SASRec's positions and their LayerNorm) and the softmax head
    (with its LayerNorm) are the shallow model's;
  - block i is a copy of the shallow block i mod n (StackRec's cross-block stacking:
    b0 .. b(n-1), b0 .. b(n-1), ...);
  - the copies past the first n start with alpha = 0.

So the grown backbone computes exactly the shallow one's function (each new block's residual is
alpha * F(x) = 0) and training starts from its accuracy. The copies' weights are trained blocks',
so a new block's first gradient, on alpha, is <dL/dx, F(x)> for a block that already computes a
useful F, not a random one. (StackRec copies alpha too; alpha = 0 keeps the function, which it
does not.)

A run resumed from its own checkpoints, or started from `train.init_from`, does not grow: growth
is where a run with neither starts.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from tf_skiprec import backbones
from tf_skiprec.config import Config
from tf_skiprec.data.idmap import IdMap
from tf_skiprec.errors import ConfigError
from tf_skiprec.model import BackboneModel, SkipRecModel

# The model fields that fix the shape or meaning of a copied weight; the rest (depth, dropout,
# stochastic depth) may differ.
SAME_MODEL_FIELDS = ("backbone", "channels", "num_heads", "inner_size", "activation",
                     "kernel_size", "tie_embeddings", "final_norm")


def grow_backbone(model: BackboneModel, workdir: str, config: Config, id_map: IdMap) -> str:
  """Fills `model`'s backbone (built, N blocks) from the n-block backbone of `workdir`'s best
  checkpoint, as the module docstring says; copies the item table into the policy's embedding.
  Returns the checkpoint path. ConfigError, naming the field and the fix, if the two runs do
  not fit."""
  where = f"train.grow_from={workdir!r}"
  path = tf.train.latest_checkpoint(os.path.join(workdir, "best"))
  config_path = os.path.join(workdir, "config.json")
  if path is None or not os.path.exists(config_path):
    raise ConfigError(f"{where}: no best checkpoint and config.json in {workdir}. Fix: point at "
                      "the work directory of a finished run of the shallower backbone.")
  source_config = Config.from_json_file(config_path)   # the shallow run's, read once
  shallow = source_config.model
  deep = config.model
  differ = [f"model.{name} ({getattr(shallow, name)!r} there, {getattr(deep, name)!r} here)"
            for name in SAME_MODEL_FIELDS if getattr(shallow, name) != getattr(deep, name)]
  if differ:
    raise ConfigError(f"{where}: the two backbones differ in {', '.join(differ)}. Fix: grow "
                      "from a run of the same backbone and width, with fewer blocks.")
  if shallow.num_blocks >= deep.num_blocks:
    raise ConfigError(f"{where}: it has {shallow.num_blocks} blocks and this run "
                      f"{deep.num_blocks}; growing needs fewer there. Fix: raise "
                      "model.num_blocks, or use train.init_from for the same depth.")
  if IdMap.load(os.path.join(workdir, "best", "id_map.json")) != id_map:
    raise ConfigError(f"{where}: its items are not this run's (the id maps differ). Fix: grow "
                      "from a run on the same --dataset.")

  max_len = source_config.data.max_len
  source = backbones.build(id_map.vocab_size, shallow, max_len)
  source.score_last(tf.zeros([1, max_len], tf.int32))  # build it all, then restore into it
  tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=source)).restore(
      path).expect_partial().assert_existing_objects_matched()

  target = model.backbone
  _copy(source.embed_variables() + source.output_variables(),
        target.embed_variables() + target.output_variables(), where)
  n = len(source.blocks)
  for i, block in enumerate(target.blocks):
    _copy(source.blocks[i % n].weights, block.weights, where)
    if i >= n:
      block.alpha.assign(tf.zeros_like(block.alpha))
  if isinstance(model, SkipRecModel):
    model.policy.embedding.embeddings.assign(target.embedding.embeddings)
  logging.info("Grew the %d-block backbone from the %d blocks of %s.", len(target.blocks), n,
               path)
  return path


def _copy(sources: list[tf.Variable], targets: list[tf.Variable], where: str) -> None:
  """Assigns each source variable to the target at its place; ConfigError if the count or a
  shape differs (e.g. SASRec's position table, [data.max_len, C])."""
  if len(sources) != len(targets):
    raise ConfigError(f"{where}: {len(sources)} variables to copy into {len(targets)}. Fix: grow "
                      "from a run of the same backbone.")
  for source, target in zip(sources, targets):
    if source.shape != target.shape:
      raise ConfigError(f"{where}: its {source.name} is {source.shape.as_list()}, this run's "
                        f"{target.shape.as_list()}. Fix: grow from a run with the same "
                        "data.max_len and width.")
    target.assign(source)
