"""The traced code: a training loop of n generic steps, and an evaluation step, both
strategy-aware.

Only these are traced. Python and numpy stay in the eager code around them (trainer.py).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_skiprec.metrics import target_ranks

LOSS_KEYS = ("loss", "grad_norm")  # a step whose loss or gradient norm is not finite stops the run


def make_train_loop(model, optimizers: dict, strategy: tf.distribute.Strategy,
                    step_counter: tf.Variable, seed: int, clipnorm: float = 0.0,
                    mode: str | None = None, average=None) -> Callable:
  """Returns loop(iterator, num_steps) -> {"means": {name: []}, "steps": [] int64,
  "bad_step": [] int64, "bad": {name: []}}.

  Runs up to `num_steps` training steps on batches from the (distributed) `iterator`, in one
  tf.function call: one host sync per loop, however many steps. Each step:
    - takes the stateless seed (seed, step) from `step_counter`, the global step, and folds in
      each replica's id (which gives the [2] int32 seed the model's samplers take), so that
      replicas draw differently and a resumed run, or one with another number of steps per
      loop, draws as before;
    - calls `model.compute_loss_and_stats(batch, training=True, mode=mode, seed=, step=)`
      (SkipRec computes its schedules from the step), updates each variable group of
      `model.variable_groups()` ({optimiser name: variables}) with its own optimiser (each
      replica's loss divided by the number of replicas, so the summed gradients are the mean;
      clipped to `clipnorm` when set), averages the stats over replicas, calls
      `model.after_step(stats, step, mode)` (the Lagrange multiplier's dual ascent), moves the
      weights' `average` (a training.averaging.WeightAverage, when given) and increments
      `step_counter`.
  "means" averages each stat (and "loss", "grad_norm": the global norm of a replica's
  gradients, before clipping, times the replicas) over the steps run. The loop stops after the
  first step whose loss or gradient norm is not finite: "steps" is then the number run, that
  step's index in the loop is "bad_step" (-1 when every step was finite) and its values "bad".
  """
  groups = model.variable_groups()
  base_seed = tf.constant(seed, tf.int64)

  def replica_step(batch, step_seed, step):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    step_seed = tf.random.experimental.stateless_fold_in(step_seed, replica)
    variables = [v for name in optimizers for v in groups[name]]
    with tf.GradientTape() as tape:
      loss, stats = model.compute_loss_and_stats(batch, training=True, mode=mode, seed=step_seed,
                                                 step=step)
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
  def train_step(dist_batch):
    step = step_counter.read_value()
    step_seed = tf.stack([base_seed, step])
    per_replica = strategy.run(replica_step, args=(dist_batch, step_seed, step))
    out = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
           for name, value in per_replica.items()}
    out.update(model.after_step(out, step, mode))
    if average is not None:
      average.update(step)
    step_counter.assign_add(1)
    return out

  @tf.function
  def loop(iterator, num_steps):
    # The stats' names and dtypes, from train_step's trace for this batch shape: the sums start
    # at zero and the loop body is train_step's only call site. (A second call site, a first
    # step peeled off the loop, would hold a second copy of every stateful random op, dropout's
    # and the sampled softmax's, seeded like the first: the two copies draw the same numbers.)
    outputs = train_step.get_concrete_function(iterator.element_spec).structured_outputs
    sums = {name: tf.zeros([], t.dtype) for name, t in outputs.items()}
    bad = dict(sums)
    done = tf.constant(0, tf.int64)
    bad_step = tf.constant(-1, tf.int64)
    while done < tf.cast(num_steps, tf.int64) and bad_step < 0:
      out = train_step(next(iterator))
      sums = {name: sums[name] + out[name] for name in sums}
      finite = _finite(out)
      bad_step = tf.where(finite, bad_step, done)
      bad = {name: tf.where(finite, bad[name], out[name]) for name in bad}
      done += 1
    return {"means": {name: total / tf.cast(done, total.dtype) for name, total in sums.items()},
            "steps": done, "bad_step": bad_step, "bad": bad}

  return loop


def _finite(stats: dict) -> tf.Tensor:
  return tf.reduce_all([tf.math.is_finite(stats[k]) for k in LOSS_KEYS])


def make_eval_step(model, strategy: tf.distribute.Strategy) -> Callable:
  """Returns step(distributed_batch, threshold, max_blocks) -> per-replica {"rank": [b],
  "user": [b], "keep": [b, N]}.

  The decisions are the model's deterministic ones at `threshold` ([] float32), each row capped
  at its `max_blocks` ([] int32) most probable blocks (every block for the backbone alone, its
  first max_blocks with a cap).
  """

  def replica_step(batch, threshold, max_blocks):
    keep = model.decisions(batch["history"], threshold, max_blocks)    # [b, N]
    scores = model.score(batch["history"], block_mask=keep)            # [b, V]
    return {"rank": target_ranks(scores, batch["target"]), "user": batch["user"], "keep": keep}

  @tf.function
  def step(dist_batch, threshold, max_blocks):
    return strategy.run(replica_step, args=(dist_batch, threshold, max_blocks))

  return step


def local_concat(strategy: tf.distribute.Strategy, per_replica) -> dict:
  """Concatenates per-replica outputs ({name: [b, ...]}) into numpy arrays ({name: [B, ...]})."""
  out = {}
  for name in per_replica:
    parts = strategy.experimental_local_results(per_replica[name])
    out[name] = tf.concat(parts, axis=0).numpy()
  return out
