"""Builds side_by_side/pinned_1208.json (BUILD_NOTES, issue 17, sixteenth session): our 2-block
SASRec on RecBole's samples (the variant sas2_gelu_prefix, 3 seeds, one after another on core 1,
one thread) beside RecBole's SASRec (core 0, one thread: 12 epochs, then 3 more in a second run
so that RecBole ran beside ours until our third seed's best epoch), after the input pipelines'
teardown fix (aa44172). RecBole's time to best is its mean training epoch here times its 19
epochs to best (PEERS.md; its epochs' validation NDCG@10 here equal the full run's)."""
import json
import statistics

D = 'bench/results/sasrec_ml100k/side_by_side'
ours = json.load(open(f'{D}/ours_1208.json'))
peer = [json.load(open(f'{D}/{name}'))['peer'] for name in ('recbole_1208.json', 'recbole2_1208.json')]
epochs = [e['train_seconds'] for p in peer for e in p['epochs']]
recbole_epoch = statistics.mean(epochs)
recbole_to_best = 19 * recbole_epoch
runs = {}
for seed, run in zip(ours['seeds'], ours['runs']['sas2_gelu_prefix']):
  runs[str(seed)] = {"best_epoch": run["best_epoch"], "epochs_run": run["epochs_run"],
                "seconds_to_best": run["seconds_to_best"],
                "seconds_per_epoch": run["train_seconds"] / run["epochs_run"],
                "test_ndcg10": run["test"]["NDCG@10"], "valid_ndcg10": run["valid"]["NDCG@10"],
                "ratio_to_recbole": run["seconds_to_best"] / recbole_to_best}
ratios = [r["ratio_to_recbole"] for r in runs.values()]
out = {
  "recbole_epoch_train_seconds": epochs,
  "recbole_mean_epoch_seconds": recbole_epoch,
  "recbole_seconds_to_best": recbole_to_best,
  "ours": runs,
  "ours_test_ndcg10_mean": statistics.mean(r["test_ndcg10"] for r in runs.values()),
  "ours_test_ndcg10_std": statistics.stdev(r["test_ndcg10"] for r in runs.values()),
  "ours_seconds_to_best_mean": statistics.mean(r["seconds_to_best"] for r in runs.values()),
  "ratio_of_means": statistics.mean(r["seconds_to_best"] for r in runs.values()) / recbole_to_best,
  "ratio_per_seed": ratios,
  "per_epoch_ratio": statistics.mean(r["seconds_per_epoch"] for r in runs.values()) / recbole_epoch,
}
json.dump(out, open(f'{D}/pinned_1208.json', 'w'), indent=1)
print(json.dumps(out, indent=1))
