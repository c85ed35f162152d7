"""The traced steps: a generic train step and an evaluation step, both strategy-aware.

Only these are traced. Python and numpy stay in the eager code around them (run.py).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_skiprec.metrics import target_ranks


def make_train_step(model, optimizers: dict, strategy: tf.distribute.Strategy,
                    clipnorm: float = 0.0, mode: str | None = None) -> Callable:
  """Returns step(distributed_batch, seed) -> {"loss": scalar, "grad_norm": scalar, **stats},
  averaged over replicas (grad_norm: the global norm of this replica's gradients, before
  clipping). `seed`: [2] int, the step's stateless seed (run.py: (train.seed, step)); each
  replica folds in its id (which gives the [2] int32 seed the model's samplers take), so
  replicas draw differently and a resumed run draws as before.

  The model supplies `compute_loss_and_stats(batch, training=True, mode=mode)` and
  `variable_groups()` ({optimiser name: variables}); each group is updated by its own optimiser.
  Each replica's loss is divided by the number of replicas so the summed gradients are the mean.
  """
  groups = model.variable_groups()

  def replica_step(batch, seed):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    seed = tf.random.experimental.stateless_fold_in(seed, replica)
    variables = [v for name in optimizers for v in groups[name]]
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True, mode=mode, seed=seed)
      scaled = loss / strategy.num_replicas_in_sync
    grads = tape.gradient(scaled, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    norm = tf.linalg.global_norm(grads)
    if clipnorm:
      grads, _ = tf.clip_by_global_norm(grads, clipnorm, use_norm=norm)  # the norm once
    grad_norm = norm * strategy.num_replicas_in_sync
    start = 0
    for name, optimizer in optimizers.items():
      n = len(groups[name])
      optimizer.apply_gradients(zip(grads[start:start + n], groups[name]))
      start += n
    return {"loss": loss, "grad_norm": grad_norm, **stats}

  @tf.function
  def step(dist_batch, seed):
    per_replica = strategy.run(replica_step, args=(dist_batch, seed))
    return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()}

  return step


def make_eval_step(model, strategy: tf.distribute.Strategy) -> Callable:
  """Returns step(distributed_batch) -> per-replica {"rank": [b], "user": [b], "keep": [b, N]}.

  The decisions are the model's deterministic ones (all blocks for the plain backbone).
  """

  def replica_step(batch):
    keep = model.decisions(batch["history"])                           # [b, N]
    scores = model.score(batch["history"], block_mask=keep)            # [b, V]
    return {"rank": target_ranks(scores, batch["target"]), "user": batch["user"], "keep": keep}

  @tf.function
  def step(dist_batch):
    return strategy.run(replica_step, args=(dist_batch,))

  return step


def local_concat(strategy: tf.distribute.Strategy, per_replica) -> dict:
  """Concatenates per-replica outputs ({name: [b, ...]}) into numpy arrays ({name: [B, ...]})."""
  out = {}
  for name in per_replica:
    parts = strategy.experimental_local_results(per_replica[name])
    out[name] = tf.concat(parts, axis=0).numpy()
  return out
