"""SASRec on ML-100k (issue 17): our 2-block SASRec against RecBole's, a deeper SASRec, and SkipRec
on it at budgets 0.5 and 0.3, 3 seeds, on the SPEC §5 protocol.

  .venv/bin/python bench/sasrec_ml100k.py --workdir=runs/sasrec_ml100k     # 5 variants x 3 seeds
  .venv/bin/python bench/sasrec_ml100k.py --quick                          # 1 seed, 1 epoch each
  .venv/bin/python bench/serving_trained.py \
      --run=sasrec_skiprec=runs/sasrec_ml100k/0/gumbel50cmd_sas8_grown_gelu_e20 \
      --out=bench/results/sasrec_ml100k                                    # the served speed-up

Variants (bench/ml100k_variants.py, backbone "sasrec"; experiments in
tf_skiprec/experiments/ml100k_sasrec.py):
  sas2           ml100k_sasrec_2_w25 (ReLU): RecBole's shape, 2 blocks x 64, 2 heads,
                 feed-forward 256, on windows every 25 items;
  sas8           ml100k_sasrec_8: 8 blocks, with stochastic depth in pretraining, from scratch;
  sas8_grown     the same, grown from sas2 (train.grow_from: its blocks stacked, the new ones
                 at alpha 0);
  gumbel50_sas8_grown, gumbel30_sas8_grown
                 SkipRec fine-tuned from sas8_grown with the pool policy, the blocks at 0.5 and
                 0.3;
  gumbel50c_sas8_grown, gumbel30c_sas8_grown
                 the same with train.calibrate_threshold;
  gumbel50cm_sas8_grown, gumbel30cm_sas8_grown
                 the same with train.calibrate_max_blocks too: where the blocks run over the
                 budget on validation, the threshold or the cap that holds it, whichever is
                 better on validation;
  gumbel50cmd_sas8_grown, gumbel30cmd_sas8_grown, gumbel50cmd_sas8_grown_gelu
                 the same with in-place distillation (policy.distill_weight=1): the full
                 backbone, trained on the labels, teaches the chosen blocks;
  gumbel50cmd_sas8_grown_gelu_e20
                 the last, up to 20 epochs (10 by default);
  gumbel50_sas8, gumbel30_sas8
                 SkipRec fine-tuned from sas8;
  sas2_d3, sas2_s10, sas2_lr5, sas2_gelu
                 sas2 with dropout 0.3, windows every 10 items, Adam at 5e-4, the exact GELU
                 (RecBole's) in the feed-forward layer: its settings compared over the seeds,
                 on validation;
  sas2_gelu_b32, sas2_gelu_b16
                 sas2_gelu at 32 and 16 windows a step (64 by default);
  sas2_gelu_prefix
                 sas2_gelu on RecBole's samples: a window ending at every item (each counts its
                 last label), 256 a step;
  sas2_gelu_s5, sas2_gelu_s10
                 the same labels at a fraction of the positions: windows every 5 (10) items,
                 each counting its last 5 (10) labels, 51 (26) windows a step (s5:
                 ml100k_sasrec_2, by the rule of BUILD_NOTES.md, "Eleventh session");
  sas8_grown_gelu_p, gumbel50cmd_sas8_grown_gelu_e20_p
                 the GELU chain grown from it, on windows every 25 items;
  sas8_grown_gelu_pp, gumbel50cmd_sas8_grown_gelu_e20_pp, gumbel50cmd_sas8_grown_gelu_e20_ppp
                 the same with the 8 blocks pretrained on the prefixes (patience 4), SkipRec
                 fine-tuned on windows every 25 items (_pp) or on the prefixes (_ppp);
  sas4_grown_gelu_pp, gumbel50cmd_sas4_grown_gelu_e20_ppp
                 4 blocks grown from sas2_gelu_prefix, on the prefixes, and SkipRec on them;
  gumbel50cmdu_sas4_grown_gelu_e20_ppp
                 the same with the budget over user-balanced windows (policy.budget_over=users);
  gumbel50cmdl_sas4_grown_gelu_e20_ppp
                 the same users, the budget over their validation histories
                 (policy.budget_over=latest);
  <a GELU variant>_ema99, _ema998
                 sas2_gelu, sas8_grown_gelu, gumbel50cmd_sas8_grown_gelu_e20 and
                 gumbel30cm_sas8_grown_gelu with weight averaging (train.ema_decay 0.99, 0.998),
                 each from the averaged variant before it.
The default (SASREC_DEFAULT): sas2_gelu_prefix (the 2-block model on RecBole's samples), then
sas2_gelu, sas8_grown_gelu, gumbel50cmd_sas8_grown_gelu_e20 and gumbel30cm_sas8_grown_gelu: the
recipe of tf_skiprec/experiments/ml100k_sasrec.py at budgets 0.5
(with distillation, 20 epochs) and 0.3 (without: validation preferred it off there). The ReLU
variants pin model.activation=relu; the others are run by name with --variants.

It is bench/skiprec_ml100k.py with the SASRec variants as its default, so it takes the same flags
(--variants, --seeds, --workdir to continue, --data, --quick, --out) and prints the same lines,
table and acceptance check: the bar is the best full SASRec by mean test NDCG@10, answered by
the SkipRec variant at budget <= 0.5 running at most half the blocks that is best on validation.
Beside it, the peer: RecBole's SASRec, test NDCG@10 0.0636, 2,290 s to its best epoch
(../shared/PEERS.md), whose tenth, 229 s, is the time our 2-block SASRec has.
Writes bench/out/sasrec_ml100k.json (--out).
"""

from __future__ import annotations

from absl import app, flags

import skiprec_ml100k  # noqa: E402  (bench/: the runner and the table)
from ml100k_variants import SASREC_DEFAULT  # noqa: E402

PEER_NDCG10 = 0.0636         # RecBole 1.2.1 SASRec on this machine, ../shared/PEERS.md
PEER_SECONDS_TO_BEST = 2290  # its wall time to the best epoch


def main(argv):
  skiprec_ml100k.main(argv, name="sasrec_ml100k")
  print(f"\nPeer: RecBole SASRec, test NDCG@10 {PEER_NDCG10}, {PEER_SECONDS_TO_BEST} s to its best "
        f"epoch; the bar for sas2 is NDCG@10 >= {PEER_NDCG10} in <= "
        f"{PEER_SECONDS_TO_BEST / 10:.0f} s to its best epoch (mean of the seeds, above).")


if __name__ == "__main__":
  flags.FLAGS.set_default("variants", list(SASREC_DEFAULT))
  app.run(main)
