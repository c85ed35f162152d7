"""`run(config, workdir) -> dict`: the one entry point for training, evaluation and export.

The CLI (train.py), the tuner and the tests all call it. Modes (train.mode): "pretrain" trains
the backbone alone; "gumbel" and "rl" train SkipRec's policy jointly with the backbone, starting
from `train.init_from` (a pretrain work directory) or, with `train.pretrain_epochs` > 0, from a
pretrain stage run first in `workdir/pretrain`.

A run started again in the same work directory resumes from the latest checkpoint, mid-epoch
included (the shuffle order depends only on the seed and the epoch, so done batches are skipped).
A finished run is evaluated again, not trained, unless `continue_finished` (a Hyperband round, a
larger train.epochs).

Work directory layout:
  config.json     the resolved config
  id_map.json     the item id map (also beside each checkpoint directory)
  checkpoints/    latest checkpoints (model, optimisers, run state)
  best/           the best model on validation (selection.py)
  tensorboard/    summaries
  pretrain/       the pretrain stage's own work directory, when there is one
  *.png           SkipRec only: usage_by_block.png, accuracy_vs_blocks.png
  metrics.json    the final result

With `export.base_dir` set, the best model is then exported for TF Serving to
<export.base_dir>/<export.model_name>/<version>/ (tf_skiprec/export/).
"""

from __future__ import annotations

import copy
import logging
import os

import tf_keras as keras

from tf_skiprec.config import Config
from tf_skiprec.data.run_data import RunData
from tf_skiprec.training import cluster, end_of_run, workdir as workdir_lib
from tf_skiprec.training.trainer import Trainer


def run(config: Config, workdir: str, *, continue_finished: bool = False) -> dict:
  """Trains (or resumes) and evaluates; returns the result, also written to metrics.json."""
  config.validate()
  strategy = cluster.make_strategy(config.runtime.strategy)  # first: collectives need it so
  workdir_lib.check_resumable(config, workdir)
  pretrained, init_from = pretrain_stage(config, workdir)

  keras.utils.set_random_seed(config.train.seed)
  data = RunData.load(config.data, config.train.window_stride)
  config.validate(num_items=data.id_map.num_items)  # what depends on the data, before training
  trainer = Trainer(config, workdir, data, strategy)
  trainer.restore(init_from, continue_finished)
  trainer.claim()
  trainer.train()

  trainer.restore_best()
  sweep = end_of_run.threshold_sweep(trainer) if config.train.mode != "pretrain" else None
  calibrations = {}
  if sweep is not None:
    config, calibrations = end_of_run.calibrate(trainer, sweep)
  results = end_of_run.final_evaluation(trainer)
  if sweep is not None:
    results.update(threshold=config.policy.threshold, max_blocks=config.policy.max_blocks,
                   **calibrations)
    results["threshold_sweep"] = sweep
    results["max_blocks_sweep"] = end_of_run.max_blocks_sweep(trainer)
    if trainer.chief:
      results["plots"] = end_of_run.draw_plots(results, workdir)
  results.update(trainer.summary())
  results.update(num_users=data.sequences.num_users, num_items=data.id_map.num_items,
                 dropped_users=data.sequences.dropped_users, workdir=workdir,
                 init_from=init_from or None,
                 grow_from=config.train.grow_from or None, pretrain=_stage_summary(pretrained))
  if config.export.base_dir and trainer.chief:
    results["export"] = end_of_run.export_best(trainer, config)
  if trainer.chief:
    end_of_run.write_metrics(results, workdir)
  cluster.barrier(strategy)  # the other workers may read what the chief wrote (a pretrain stage)
  return results


def pretrain_stage(config: Config, workdir: str) -> tuple[dict | None, str]:
  """A SkipRec run with `train.pretrain_epochs` and no `train.init_from` first pretrains its
  backbone in workdir/pretrain: returns (that stage's result, its directory). Otherwise
  (None, train.init_from)."""
  train = config.train
  if train.mode == "pretrain" or train.init_from or train.pretrain_epochs <= 0:
    return None, train.init_from
  stage = copy.deepcopy(config)
  stage.train.mode, stage.train.epochs = "pretrain", train.pretrain_epochs
  stage.train.learning_rate = train.pretrain_learning_rate or train.learning_rate
  stage.train.patience = train.pretrain_patience or train.patience
  stage.train.window_stride = train.pretrain_window_stride
  stage.export.base_dir = ""  # only the finished model is exported
  directory = os.path.join(workdir, "pretrain")
  logging.info("Pretraining the backbone for up to %d epochs in %s.", train.pretrain_epochs,
               directory)
  return run(stage, directory), directory


def _stage_summary(result: dict | None) -> dict | None:
  if result is None:
    return None
  return {k: result[k] for k in ("valid", "test", "best_epoch", "train_seconds", "workdir")}
