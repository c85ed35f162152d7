"""The traced steps: a generic train step and an evaluation step, both strategy-aware.

Only these are traced. Python and numpy stay in the eager code around them (run.py).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_skiprec.metrics import target_ranks


def make_train_step(model, optimizer, strategy: tf.distribute.Strategy,
                    clipnorm: float = 0.0) -> Callable:
  """Returns step(distributed_batch) -> {"loss": scalar}, the loss averaged over replicas.

  The model supplies `compute_loss(batch, training=True)`; each replica's loss is divided by the
  number of replicas so the summed gradients are the mean gradient.
  """

  def replica_step(batch):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
      scaled = loss / strategy.num_replicas_in_sync
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    if clipnorm:
      grads, _ = tf.clip_by_global_norm(grads, clipnorm)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  @tf.function
  def step(dist_batch):
    per_replica = strategy.run(replica_step, args=(dist_batch,))
    return {"loss": strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)}

  return step


def make_eval_step(model, strategy: tf.distribute.Strategy) -> Callable:
  """Returns step(distributed_batch) -> per-replica {"rank": [b], "user": [b]}."""

  def replica_step(batch):
    scores = model.score(batch["history"])                   # [b, V]
    return {"rank": target_ranks(scores, batch["target"]), "user": batch["user"]}

  @tf.function
  def step(dist_batch):
    return strategy.run(replica_step, args=(dist_batch,))

  return step


def local_concat(strategy: tf.distribute.Strategy, per_replica) -> dict:
  """Concatenates per-replica outputs ({name: [b]}) into numpy arrays ({name: [B]})."""
  out = {}
  for name in per_replica:
    parts = strategy.experimental_local_results(per_replica[name])
    out[name] = tf.concat(parts, axis=0).numpy()
  return out
