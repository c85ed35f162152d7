"""Train, evaluate and export tf_skiprec models.

  python train.py --experiment=default --workdir=runs/default
  python train.py --experiment=ml100k_10 --dataset=recbole:data/ml-100k --workdir=runs/m10
  python train.py --experiment=smoke --workdir=/tmp/smoke --override model.num_blocks=2
  python train.py --mode=tune --experiment=smoke --workdir=runs/tune --max_trials=8 \
      --limit_blocks=3 --tune=model.num_blocks=4,8 --override=train.pretrain_epochs=2

absl flags -> config -> run(). Nothing else.
"""

import logging as std_logging
import sys

import tf_skiprec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from absl import app, flags, logging

from tf_skiprec.config import Config
from tf_skiprec.config_rules import CHOICES
from tf_skiprec.errors import ConfigError, DataError, TrainingError
from tf_skiprec.experiments import get_config
from tf_skiprec.training import run
from tf_skiprec.training.report import result_table

EXPERIMENT = flags.DEFINE_string("experiment", "default",
                                 "Named experiment (tf_skiprec/experiments/).")
WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Work directory (resumes if it exists).")
DATASET = flags.DEFINE_string("dataset", None, "'synthetic' or FORMAT:PATH, e.g. "
                              "recbole:data/ml-100k (FORMAT: recbole|movielens|csv|sasrec).")
CONFIG = flags.DEFINE_string("config", None, "A JSON config file (as written to workdir/config.json);"
                             " replaces --experiment.")
OVERRIDES = flags.DEFINE_multi_string("override", [], "key=value, e.g. model.num_blocks=32. In "
                                      "--mode=tune it also removes the key from the search.")
MODE = flags.DEFINE_enum("mode", "train", ["train", "tune"], "train: one run; tune: a Keras Tuner "
                         "search (tf_skiprec/tuning/).")
CONTINUE = flags.DEFINE_bool("continue_finished", False, "train: a finished run in --workdir "
                             "trains on to a larger train.epochs (it is only evaluated "
                             "again otherwise).")
TUNER = flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"], "tune: search "
                          "algorithm.")
MAX_TRIALS = flags.DEFINE_integer("max_trials", 10, "tune: trials (random, bayesian).")
MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 9, "tune: hyperband's largest epoch budget.")
TUNE = flags.DEFINE_multi_string("tune", [], "tune: narrow or add a dimension, key=a,b,c or "
                                 "key=low:high[:log], e.g. --tune=model.num_blocks=8,16.")
LIMIT_BLOCKS = flags.DEFINE_float("limit_blocks", 0.0, "tune: limit on validation mean executed "
                                  "blocks (0 = none).")
LIMIT_MFLOPS = flags.DEFINE_float("limit_mflops", 0.0, "tune: limit on estimated MFLOPs per "
                                  "request (0 = none).")
TUNE_SEED = flags.DEFINE_integer("tune_seed", 0, "tune: the search algorithm's seed.")
STRATEGY = flags.DEFINE_enum("strategy", None, list(CHOICES["runtime.strategy"]),
                             "Distribution (runtime.strategy): one device; MirroredStrategy over this "
                             "machine's GPUs; MultiWorkerMirroredStrategy over TF_CONFIG's cluster.")
RETRAIN_BEST = flags.DEFINE_bool("retrain_best", False, "tune: retrain the best config in "
                                 "workdir/best/trial_<id> (exporting if its config says so).")


def build_config() -> Config:
  """The experiment (or --config file), with --dataset, --strategy and --override applied, and
  validated: a bad value stops here, before anything is trained or written."""
  config = Config.from_json_file(CONFIG.value) if CONFIG.value else get_config(EXPERIMENT.value)
  if DATASET.value:
    config.data.dataset = DATASET.value
  if STRATEGY.value:
    config.runtime.strategy = STRATEGY.value
  for assignment in OVERRIDES.value:
    config.override(assignment)
  return config.validate()


def main(argv):
  if len(argv) > 1:  # e.g. `--override a=1 b=2`: b=2 would be silently ignored
    print(f"error: unexpected argument(s) {' '.join(argv[1:])!r}: flags take one value each; "
          "give every assignment its own flag, e.g. --override train.epochs=4 "
          "--override train.patience=2", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.INFO)
  # Our INFO lines, but not the INFO chatter of installed libraries (TF checkpoint sharding).
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or "site-packages" not in r.pathname)
  try:
    config = build_config()
    if MODE.value == "tune":
      return tune(config)
    result = run(config, WORKDIR.value, continue_finished=CONTINUE.value)
  except (ConfigError, DataError, TrainingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print()
  print(result_table(result))
  print(f"\nbest epoch {result['best_epoch']}, {result['steps']} steps, "
        f"{result['train_seconds']:.1f} s training; work directory: {WORKDIR.value}")
  return 0


def tune(config: Config) -> int:
  """--mode=tune: the search, then its table and where its outputs are."""
  from tf_skiprec.tuning.search import search  # noqa: PLC0415  (keras_tuner only when tuning)
  from tf_skiprec.tuning.space import build_space  # noqa: PLC0415
  fixed = [a.split("=", 1)[0].strip() for a in OVERRIDES.value]
  space = build_space(config, TUNE.value, fixed)
  print("searching: " + "; ".join(d.describe() for d in space))
  out = search(config, WORKDIR.value, space, tuner=TUNER.value,
                      max_trials=MAX_TRIALS.value, max_epochs=MAX_EPOCHS.value,
                      limit_blocks=LIMIT_BLOCKS.value, limit_mflops=LIMIT_MFLOPS.value,
                      seed=TUNE_SEED.value, retrain_best=RETRAIN_BEST.value)
  if out is None:
    print("worker done: the chief writes the report.")
    return 0
  with open(out["table"]) as f:
    print(f.read())
  best = out["best_trial"]
  print(f"best trial {best['trial']}: validation NDCG@10 {best['valid_ndcg10']:.4f} at "
        f"{best['mean_blocks']:.2f} blocks, {best['mflops']:.1f} MFLOPs\n"
        f"best config: {out['best_config']} (python train.py --config={out['best_config']})\n"
        f"Pareto plot: {out['pareto']}")
  return 0


if __name__ == "__main__":
  app.run(main)
