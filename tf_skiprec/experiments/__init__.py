"""The named experiments (`train.py --experiment=NAME`), one module per family, each opening with
its command line and its cost on this project's 2-core CPU machine:

  default.py        `make train`: SkipRec on the graded synthetic data (and its RL twin)
  two_kinds.py      the first `make train`: SkipRec on the two-kind synthetic data
  smoke.py          a tiny run, the tests' starting point
  ml100k.py         MovieLens-100K (--dataset=recbole:PATH): backbones and SkipRec recipes
  ml100k_sasrec.py  MovieLens-100K on the SASRec backbone, and SkipRec on it
  large_catalog.py  SkipRec on a 1,000,000-item catalogue with the sampled softmax

Each experiment is a function returning a fresh Config, registered by name with `@register`
(registry.py).
"""

from tf_skiprec.experiments import (  # noqa: F401
    default, large_catalog, ml100k, ml100k_sasrec, smoke, two_kinds)
from tf_skiprec.experiments.registry import EXPERIMENTS, get_config, register  # noqa: F401
