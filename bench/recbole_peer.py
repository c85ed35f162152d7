"""RecBole's SASRec, the issue-17 peer, run on this machine beside ours, and its time to best.

The issue's time bar is a ratio: our 2-block SASRec must reach its best epoch in a tenth of
RecBole's time. Seconds move from day to day on this machine (seed 0 of the variant sas2_gelu_prefix took
243 s to best on 2026-12-01 and 327 s, bit-identical otherwise, on 2026-12-02), so both sides are
timed in one session, each alone on the machine, and compared as a ratio.

RecBole lives in its own virtual environment, outside this repository; nothing of RecBole's is
vendored here. What worked on 2026-12-02 (Python 3.11):

  python3.11 -m venv /work/recbole_env
  /work/recbole_env/bin/pip install torch==2.13.0 recbole==1.2.1
  /work/recbole_env/bin/pip install numpy==1.26.4 'pandas<2.3' 'setuptools<70'
      # RecBole 1.2.1 imports ray.tune, which needs np.bool8 (gone in NumPy 2) and
      # pkg_resources (gone from recent setuptools)

Then, one after the other, each alone on the machine (RecBole took about 80 min for 20 epochs
here on 2026-12-02, ours about 35 min for 3 seeds):

  .venv/bin/python bench/recbole_peer.py --python=/work/recbole_env/bin/python \
      --data=../shared/data/ml-100k --workdir=/tmp/recbole --epochs=20
  .venv/bin/python bench/sasrec_ml100k.py --data=../shared/data/ml-100k --workdir=/tmp/h11 \
      --seeds=0,1,2 --variants=sas2_gelu_prefix --out=bench/results/sasrec_ml100k/side_by_side
  .venv/bin/python bench/recbole_peer.py --log=/tmp/recbole/recbole.log \
      --ours=bench/results/sasrec_ml100k/side_by_side/sasrec_ml100k.json \
      --out=bench/results/sasrec_ml100k/side_by_side/recbole_sasrec.json

(the last reads RecBole's log again and sets our seconds to best against its own).

The configuration is PEERS.md's: SASRec with 2 layers, 2 heads, hidden 64, inner 256 (RecBole's
dropout 0.5), seed 2020, batch 256, Adam at 1e-3, cross-entropy over every item, the last 50
items, leave-one-out in time order, full ranking, chosen on validation NDCG@10 with early stopping
after 5 epochs without a gain. `--epochs` caps the run (RecBole's own default is 300); the JSON
says whether early stopping ended it. RecBole's time to best is the sum of its training epochs'
seconds up to and including the best one, as ours counts training seconds only (its validation
seconds are given beside it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

from recbole_log import compare, parse_log  # bench/recbole_log.py

PYTHON = flags.DEFINE_string("python", None, "RecBole's interpreter (its own venv). Needed to run.")
DATA = flags.DEFINE_string("data", None, "A folder <name>/ holding <name>.inter (RecBole's atomic "
                           "format), e.g. ../shared/data/ml-100k.")
WORKDIR = flags.DEFINE_string("workdir", "/tmp/recbole", "RecBole's config, log and checkpoints.")
EPOCHS = flags.DEFINE_integer("epochs", 300, "The most epochs RecBole trains (early stopping may "
                              "end it sooner).")
LOG = flags.DEFINE_string("log", None, "Read this RecBole log instead of running RecBole.")
OURS = flags.DEFINE_string("ours", None, "The JSON that bench/sasrec_ml100k.py wrote in the same "
                           "session: its variant's seconds to best are set against RecBole's.")
VARIANT = flags.DEFINE_string("variant", "sas2_gelu_prefix", "The variant of --ours compared.")
OUT = flags.DEFINE_string("out", None, "Where the JSON result goes.")

# PEERS.md's RecBole SASRec, on SPEC §5's protocol.
CONFIG = """\
data_path: {data_path}
dataset: {dataset}
USER_ID_FIELD: user_id
ITEM_ID_FIELD: item_id
TIME_FIELD: timestamp
load_col:
  inter: [user_id, item_id, rating, timestamp]
MAX_ITEM_LIST_LENGTH: 50
seed: 2020
reproducibility: True
epochs: {epochs}
train_batch_size: 256
eval_batch_size: 4096
learning_rate: 0.001
train_neg_sample_args: ~
loss_type: CE
stopping_step: 5
eval_args:
  split: {{'LS': 'valid_and_test'}}
  order: TO
  mode: full
  group_by: user
metrics: ['Hit', 'NDCG', 'MRR']
topk: [5, 10, 20]
valid_metric: NDCG@10
n_layers: 2
n_heads: 2
hidden_size: 64
inner_size: 256
checkpoint_dir: {workdir}/saved
show_progress: False
"""

# Runs inside RecBole's interpreter: its versions and threads, then RecBole's own entry point.
RUNNER = """\
import sys, torch, recbole
print('PEER versions torch', torch.__version__, 'recbole', recbole.__version__,
      'threads', torch.get_num_threads(), flush=True)
from recbole.quick_start import run_recbole
run_recbole(model='SASRec', config_file_list=[sys.argv[1]])
"""

def run_recbole(python: str, data: str, workdir: str, epochs: int) -> str:
  """Writes the config, runs RecBole in its interpreter (its lines echoed), returns the log."""
  data, workdir = os.path.abspath(data.rstrip("/")), os.path.abspath(workdir)  # RecBole's cwd
  dataset = os.path.basename(data)
  inter = os.path.join(data, f"{dataset}.inter")
  if not os.path.isfile(inter):
    raise FileNotFoundError(f"{inter} not found: --data must be a folder <name>/ holding "
                            "<name>.inter in RecBole's atomic format.")
  os.makedirs(workdir, exist_ok=True)
  config = os.path.join(workdir, "sasrec.yaml")
  with open(config, "w") as f:
    f.write(CONFIG.format(data_path=os.path.dirname(data), dataset=dataset, epochs=epochs,
                          workdir=workdir))
  log_path = os.path.join(workdir, "recbole.log")
  # RecBole 1.2.1 calls torch.load without weights_only, which torch >= 2.6 defaults to True.
  env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
  with open(log_path, "w") as log, subprocess.Popen(
      [python, "-c", RUNNER, config], cwd=workdir, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) as proc:
    for line in proc.stdout:
      log.write(line)
      log.flush()
      if "training [" in line or "evaluating [" in line or "result" in line:
        print(line.rstrip(), flush=True)
  if proc.returncode:
    raise RuntimeError(f"RecBole exited with {proc.returncode}; its log: {log_path}")
  return log_path


def main(argv):
  del argv
  if LOG.value:
    log_path = LOG.value
  elif PYTHON.value and DATA.value:
    log_path = run_recbole(PYTHON.value, DATA.value, WORKDIR.value, EPOCHS.value)
  else:
    sys.exit("give --log=FILE (an earlier run's log), or --python and --data to run RecBole")
  with open(log_path) as f:
    result = {"log": os.path.abspath(log_path), "peer": parse_log(f.read())}
  peer = result["peer"]
  print(f"RecBole SASRec: best epoch {peer['best_epoch']} of {peer['epochs_run']} run "
        f"(0-based), {peer['seconds_to_best']:.0f} s to best, "
        f"{peer['mean_epoch_seconds']:.1f} s an epoch; test {peer.get('test')}")
  if OURS.value:
    with open(OURS.value) as f:
      result["ours"] = compare(peer, json.load(f), VARIANT.value)
    c = result["ours"]
    print(f"{c['variant']}: {c['mean_seconds_to_best']:.0f} s to best (mean of seeds "
          f"{c['seeds']}), {c['ratio_of_mean']:.3f} of RecBole's; within a tenth: "
          f"{c['within_a_tenth']}")
  if OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(OUT.value)), exist_ok=True)
    with open(OUT.value, "w") as f:
      json.dump(result, f, indent=1)
    print("wrote", OUT.value)


if __name__ == "__main__":
  app.run(main)
