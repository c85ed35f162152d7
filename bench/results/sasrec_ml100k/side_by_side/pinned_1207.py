"""Builds side_by_side/pinned_1207.json from today's pinned logs (BUILD_NOTES, twelfth session):
RecBole's 2 epochs on core 0 and our 2-block SASRec on RecBole's samples, with the last block at
the counted positions (backbone.counted), on core 1, one thread each, started together."""
import json
import re

D = 'bench/results/sasrec_ml100k/side_by_side'
ours = [float(s) for s in re.findall(r"epoch \d+/40 .*\s([0-9.]+)s$",
                                      open(f'{D}/logs/pinned_1207_ours_counted.log').read(), re.M)]
rb = json.load(open(f'{D}/recbole_pinned_1207.json'))['peer']
recbole = [e['train_seconds'] for e in rb['epochs']]
overlap = ours[1:6]  # epochs 2-6 ran wholly inside RecBole's two training epochs (02:13:50-02:21:40)
per_epoch = sum(overlap) / len(overlap) / (sum(recbole) / len(recbole))
best = {"seed0_old_path": 9, "seed1_old_path": 7, "seed2_old_path": 8}  # prefix/summary.json
mean_best = sum(best.values()) / 3
out = {
  "recbole_epoch_train_seconds": recbole,
  "ours_epoch_seconds_with_validation": ours,
  "ours_epochs_wholly_overlapped": overlap,
  "per_epoch_ratio": per_epoch,
  "per_epoch_ratio_before_counted_2026_12_02_evening": [0.46, 0.57],
  "time_to_best_ratio_estimate": per_epoch * mean_best / (18 + 1),
  "time_to_best_ratio_range": [per_epoch * min(best.values()) / 19, per_epoch * max(best.values()) / 19],
  "note": ("epochs to best: ours 9, 7, 8 (sas2_gelu_prefix seeds 0-2), RecBole 19 (PEERS.md, "
           "reproduced on 2026-12-02); this run's own best epoch was 5 (valid 0.0713, test "
           "0.0595), one seed of the counted path"),
}
json.dump(out, open(f'{D}/pinned_1207.json', 'w'), indent=1)
print(json.dumps(out, indent=1))
