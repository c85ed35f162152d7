"""The distribution strategy of a run, and which worker writes what.

runtime.strategy:
  "default"      one device;
  "mirrored"     tf.distribute.MirroredStrategy: every local GPU (or logical CPU device) of this
                 machine, one replica each;
  "multiworker"  tf.distribute.MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (every
                 worker runs the same command; see README, "Training on several GPUs or machines").

In a multi-worker run only the chief (task "chief", or "worker" 0 when the cluster has no chief)
writes the work directory: config, id map, checkpoints, TensorBoard, plots, metrics and the
export. Saving a checkpoint is a collective operation, so the other workers save too, into a
scratch directory of their own (`workdir/.worker_<type>_<id>`) that is deleted after each save.
Every worker restores from the chief's checkpoints, so the work directory must be on a file
system they all mount (NFS, say); a worker that restored another step than the chief's stops
with an error that says so.

Multi-worker evaluation and export run on a copy of the model built outside the strategy
(`local_copy`), refreshed from the trained one on every worker at once (`copy_variables`):
reading a variable synchronised on read (the policy's batch-norm statistics) is a collective
operation, which one worker alone must not start.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tf_skiprec.config_rules import CHOICES
from tf_skiprec.errors import ConfigError, TrainingError

STRATEGIES = CHOICES["runtime.strategy"]
_made: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy called `name`; one instance per process (a pretrain stage and the SkipRec stage
  of one run share it: TensorFlow's collectives can be configured only once)."""
  if name not in STRATEGIES:  # Config.validate() names the field and the fix
    raise ValueError(f"unknown strategy {name!r}; one of {STRATEGIES}")
  if name == "default":
    return tf.distribute.get_strategy()
  if name not in _made:
    if name == "multiworker":
      _check_tf_config()
      _made[name] = tf.distribute.MultiWorkerMirroredStrategy()
    else:
      _made[name] = tf.distribute.MirroredStrategy()
  return _made[name]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the work directory (always, unless multi-worker)."""
  if not _multi_worker(strategy):
    return True
  resolver = strategy.cluster_resolver
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and not has_chief


def scratch_dir(workdir: str, strategy: tf.distribute.Strategy) -> str | None:
  """A non-chief worker's own directory for its (discarded) checkpoint copies; None for the
  chief."""
  if is_chief(strategy):
    return None
  resolver = strategy.cluster_resolver
  return os.path.join(workdir, f".worker_{resolver.task_type}_{resolver.task_id}")


def _check_tf_config() -> None:
  """A clear error for a missing or malformed TF_CONFIG, before TensorFlow's own."""
  text = os.environ.get("TF_CONFIG", "")
  fix = ('Fix: set TF_CONFIG on every worker, e.g. {"cluster": {"worker": ["host1:port", '
         '"host2:port"]}, "task": {"type": "worker", "index": 0}} (index 1 on the second).')
  if not text:
    raise ConfigError(f"runtime.strategy='multiworker' needs the TF_CONFIG environment variable. {fix}")
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"TF_CONFIG: not valid JSON ({e.msg} at column {e.colno}). {fix}")
  cluster, task = value.get("cluster"), value.get("task")
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise ConfigError(f"TF_CONFIG: needs a 'cluster' and a 'task' object. {fix}")
  jobs = cluster.get(task.get("type"))
  if not isinstance(jobs, list) or not isinstance(task.get("index"), int) or not (
      0 <= task["index"] < len(jobs)):
    raise ConfigError(f"TF_CONFIG: task {task} is not in the cluster {cluster}. {fix}")


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Waits until every worker gets here (an all-reduce); a no-op outside multi-worker runs.

  Used before a worker reads what the chief has written (the best checkpoint, a pretrain
  stage's work directory).
  """
  agree(strategy, 1.0)  # an all-reduce returns on no worker before every worker has joined it


def evaluation_strategy(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
  """Multi-worker runs evaluate on every worker alone, over the whole split (each worker needs the
  validation score to stop at the same epoch, and the ranks of every user); others evaluate
  under `strategy`."""
  if _multi_worker(strategy):
    return tf.distribute.get_strategy()
  return strategy


def agree(strategy: tf.distribute.Strategy, value: float) -> float:
  """The mean of `value` over the workers: one number that every worker then decides on (the
  validation score behind early stopping). `value` itself outside multi-worker runs."""
  if not _multi_worker(strategy):
    return value
  tensor = tf.constant(value, tf.float64)
  return float(strategy.reduce("MEAN", strategy.run(lambda: tf.identity(tensor)), axis=None))


def check_same(strategy: tf.distribute.Strategy, value: int, what: str, workdir: str) -> None:
  """Raises TrainingError on every worker unless all of them hold the same `value`."""
  if not _multi_worker(strategy):
    return
  tensor = tf.constant([value], tf.int64)
  values = strategy.gather(strategy.run(lambda: tf.identity(tensor)), axis=0).numpy()
  low, high = int(values.min()), int(values.max())
  if low != high:
    raise TrainingError(
        f"{workdir}: the workers restored different {what} ({value} here; from {low} to {high} "
        "across the cluster), so they would not take the same steps. Fix: give every worker the "
        "same --workdir on a file system they all mount, and the same config.")


def local_copy(strategy: tf.distribute.Strategy, model, build):
  """`model` itself, or in a multi-worker run a copy built by `build()` outside the strategy
  (for evaluation and export; see the module docstring)."""
  if not _multi_worker(strategy):
    return model
  copy = build()
  mine = [(v.name, tuple(v.shape)) for v in model.variables]
  theirs = [(v.name, tuple(v.shape)) for v in copy.variables]
  if mine != theirs:
    raise RuntimeError(f"the evaluation copy's variables differ from the model's: {theirs} "
                       f"against {mine}")
  return copy


def copy_variables(source, target) -> None:
  """target's variables := source's (call on every worker at once; nothing when the same)."""
  if source is target:
    return
  for s, t in zip(source.variables, target.variables):
    t.assign(s.read_value())


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return (getattr(strategy, "cluster_resolver", None) is not None
          and strategy.extended._in_multi_worker_mode())  # noqa: SLF001
