"""Resolves `data.dataset` ("synthetic" or FORMAT:PATH) into an interaction log."""

from __future__ import annotations

from tf_skiprec.config import DataConfig
from tf_skiprec.data import readers, synthetic
from tf_skiprec.data.interactions import Interactions


def load_interactions(config: DataConfig) -> Interactions:
  """Reads the log named by `config.dataset`."""
  if config.dataset == "synthetic":
    return synthetic.generate(config.synthetic)
  return readers.read_source(config.dataset, user_col=config.user_col, item_col=config.item_col,
                             time_col=config.time_col, sep=config.sep or None)
