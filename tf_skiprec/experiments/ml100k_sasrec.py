"""MovieLens-100K on the SASRec backbone (issue 17): the peer's 2-block SASRec, a deeper one, and
SkipRec on it. bench/sasrec_ml100k.py measures them over 3 seeds (BUILD_NOTES.md, "SASRec").

  python train.py --experiment=ml100k_sasrec_2 --dataset=recbole:PATH/ml-100k --workdir=runs/sa2
  python train.py --experiment=ml100k_sasrec_2_w25 --dataset=recbole:PATH/ml-100k \\
      --workdir=runs/sa2w
  python train.py --experiment=ml100k_sasrec_8 --dataset=recbole:PATH/ml-100k --workdir=runs/sa8
  python train.py --experiment=ml100k_sasrec_skiprec --dataset=recbole:PATH/ml-100k \\
      --workdir=runs/sas --override train.grow_from=runs/sa2w

`ml100k_sasrec_2` is the 2-block SASRec chosen on validation, on windows every 5 items (RecBole's
labels at a fifth of its positions); `ml100k_sasrec_2_w25` is the same model on windows every 25
items. The
last command grows its 8-block backbone from the second's 2 blocks (train.grow_from: StackRec
stacking, the new blocks at alpha 0), pretrains it, then trains SkipRec on it: the recipe
bench/sasrec_ml100k.py measures (BUILD_NOTES.md, "SASRec"). Without the override it pretrains
the 8 blocks from scratch.

PATH/ml-100k holds RecBole's atomic ml-100k.inter (user, item, rating, timestamp).
"""

from __future__ import annotations

from tf_skiprec.config import Config
from tf_skiprec.experiments.ml100k import ml100k_10, skiprec_finetune
from tf_skiprec.experiments.registry import register


@register("ml100k_sasrec_2_w25")
def ml100k_sasrec_2_w25() -> Config:
  """The peer's SASRec shape (RecBole: 2 blocks, 64 wide, 2 heads, feed-forward 256), trained as
  the NextItNet+ backbones are (every position of a window in one pass), on windows that start
  every 25 items, so that every label past a history's first window is trained with at least
  25 items of context (RecBole trains every prefix with its whole window).

  Chosen on validation NDCG@10, seed 0, while the head norm still had gamma and beta
  (BUILD_NOTES.md, "SASRec"; without them, 3 seeds: valid 0.0669, test 0.0601): windows every
  25 items
  0.0658, every 10 0.0654, end to end 0.0645; dropout 0.2 and Adam at 1e-3 (0.5, or 2e-3: lower);
  untied output weights (tied: 0.0642-0.0646 on validation, 0.055-0.059 on test). Then, over 3
  seeds, the exact GELU in the feed-forward layer (RecBole's): valid 0.0685 ± 0.0042 against
  ReLU's 0.0669 ± 0.0030 (test 0.0611 against 0.0601). Over 5 seeds, 64 windows a step (the
  default batch) against 32: valid 0.0674 against 0.0667 (test 0.0614 against 0.0649).
  """
  config = ml100k_10()
  config.model.backbone = "sasrec"
  config.model.num_blocks = 2
  config.model.num_heads = 2
  config.model.inner_size = 256
  config.model.activation = "gelu"
  config.model.dropout = 0.2
  config.model.embedding_dropout = 0.2
  config.train.learning_rate = 1e-3
  config.train.window_stride = 25
  return config


@register("ml100k_sasrec_2")
def ml100k_sasrec_2() -> Config:
  """`ml100k_sasrec_2_w25` on RecBole's labels at a fifth of its positions: windows every 5
  items, each counting its last 5 labels (each with >= 45 items of history in it), 51 windows
  (~256 labels) a step.

  Chosen on validation by a rule written before its runs (BUILD_NOTES.md, "Eleventh session":
  the larger stride within one standard error of every prefix's validation NDCG@10), 3 seeds:
  valid 0.0675 ± 0.0003 against 0.0688 ± 0.0056 on RecBole's samples (every prefix, its last
  label counted, 256 a step: `--override train.window_stride=1 train.batch_size=256`), and
  0.0650 every 10 items. On test it scores 0.0603 ± 0.0003, below RecBole's 0.0636; every
  prefix scores 0.0648 ± 0.0034 at about 4 times the cost of an epoch (BUILD_NOTES.md, "Twelfth
  session"). Cost on this machine (2 cores): ~25 s an epoch, 95-140 s to the best epoch;
  `ml100k_sasrec_2_w25` takes ~4 min (237 s wall on 2026-12-08: 35 epochs of ~6 s, the best
  the 25th).
  """
  config = ml100k_sasrec_2_w25()
  config.train.window_stride = 5
  config.train.batch_size = 51
  return config


@register("ml100k_sasrec_8")
def ml100k_sasrec_8() -> Config:
  """A deeper SASRec: 8 blocks of `ml100k_sasrec_2_w25`'s shape, pretrained with prefix stochastic
  depth (model.block_drop_mode=prefix: with p = 0.5 a window runs only its first k blocks, k
  uniform in 1..7), so that every depth is a usable model for SkipRec to cut, as `make train`
  pretrains. With ReLU, 3 seeds: from scratch, test NDCG@10 0.0596; grown from the 2-block model
  (--override train.grow_from=<its work directory>), 0.0627, the best full SASRec measured; with
  GELU, grown, 0.0600 (valid 0.0681 against ReLU's 0.0667) (BUILD_NOTES.md, "SASRec")."""
  config = ml100k_sasrec_2_w25()
  config.model.num_blocks = 8
  config.model.block_drop = 0.5
  config.model.block_drop_mode = "prefix"
  return config


@register("ml100k_sasrec_skiprec")
def ml100k_sasrec_skiprec() -> Config:
  """SkipRec on `ml100k_sasrec_8`: pretrain it (in <workdir>/pretrain; grown from an
  `ml100k_sasrec_2_w25` run with --override train.grow_from=<its work directory>, or from --override
  train.init_from=<a pretrain work directory>), then the Gumbel policy with the cheap `pool` body,
  the blocks at 0.5 (a budget of 0.5 + the pool policy's share), the backbone fine-tuned at a
  tenth of the lr (tf_skiprec.experiments.ml100k.skiprec_finetune), the full backbone teaching
  the chosen blocks (policy.distill_weight = 1: in-place distillation); then, where the blocks
  run over the budget on validation, the keep threshold raised until they hold it
  (train.calibrate_threshold) or the blocks capped (train.calibrate_max_blocks), whichever of
  the two is better on validation.

  Distillation, and up to 20 epochs of it, each by a rule written before its runs (BUILD_NOTES.md,
  "Sixth session"), over 3 seeds: validation NDCG@10 0.0630 without, 0.0666 with 10 epochs,
  0.0673 with 20 (test 0.0600, 0.0620, 0.0627, at 3.3 of 8 blocks). At budget 0.3 (ReLU)
  validation preferred distillation off (0.0641 against 0.0625): --override
  policy.distill_weight=0.

  Cost on this machine (2 cores, measured 2026-12-08): the 2-block `ml100k_sasrec_2_w25` run ~4
  min (237 s), then this one 639 s: the grown 8-block pretraining ~4 min (12 epochs of ~17 s)
  and SkipRec ~7 min (12 epochs of ~27 s, the calibrations and the export; distillation's extra
  backbone pass about doubles a step)."""
  config = ml100k_sasrec_8()
  config.policy.body = "pool"  # before the budget: it counts the policy's own cost
  config = skiprec_finetune(config, budget=0.5)
  config.train.pretrain_epochs = 200
  config.train.pretrain_window_stride = config.train.window_stride  # as ml100k_sasrec_8
  config.train.calibrate_threshold = True
  config.train.calibrate_max_blocks = True
  config.policy.distill_weight = 1.0
  config.train.epochs = 20  # distilled, the best epoch came at skiprec_finetune's 10th
  return config
