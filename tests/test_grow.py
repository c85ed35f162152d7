"""train.grow_from: a deeper backbone grown from a trained shallower one (StackRec stacking,
tf_skiprec/training/grow.py). Known answers: the grown backbone scores exactly as the shallow one
did, its blocks are the shallow blocks in cross-block order, and the new blocks' alpha is 0."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import histories
from tf_skiprec.data.idmap import IdMap
from tf_skiprec.errors import ConfigError
from tf_skiprec.experiments import get_config
from tf_skiprec.training import builders, grow as grow_lib, run
from tf_skiprec.training.grow import grow_backbone


@pytest.fixture(scope="module")
def shallow_runs(tmp_path_factory):
  """backbone -> (config, work directory) of a finished 2-block smoke run (one epoch, so its
  alphas are not 0), made once for the module."""
  made = {}

  def make(backbone: str):
    if backbone not in made:
      config = get_config("smoke")
      config.model.backbone = backbone
      config.model.num_blocks = 2
      config.train.epochs = 1
      workdir = str(tmp_path_factory.mktemp(f"shallow_{backbone}"))
      run(config, workdir)
      made[backbone] = (config, workdir)
    return made[backbone]

  return make


def _deep(shallow, workdir: str, num_blocks: int = 5, mode: str = "pretrain"):
  config = get_config("smoke")
  config.model = type(shallow.model)(**vars(shallow.model))
  config.model.num_blocks = num_blocks
  config.train.mode = mode
  config.train.grow_from = workdir
  return config


@pytest.mark.parametrize("backbone", ["nextitnet", "sasrec"])
def test_a_grown_backbone_scores_as_the_shallow_one(shallow_runs, backbone):
  shallow_config, workdir = shallow_runs(backbone)
  id_map = IdMap.load(f"{workdir}/best/id_map.json")
  shallow = builders.build_model(shallow_config, id_map.vocab_size)
  builders.load_pretrained_backbone(shallow, workdir)
  config = _deep(shallow_config, workdir, num_blocks=5, mode="gumbel")
  model = builders.build_model(config, id_map.vocab_size)
  grow_backbone(model, workdir, config, id_map)

  source, grown = shallow.backbone.blocks, model.backbone.blocks
  assert all(float(b.alpha) != 0.0 for b in source)          # trained: a copy of 0 proves nothing
  for i, block in enumerate(grown):                           # b0 b1 b0 b1 b0
    weights = [w.numpy() for w in block.weights]
    expected = [w.numpy() for w in source[i % 2].weights]
    if i >= 2:
      assert float(block.alpha) == 0.0
      expected = [np.zeros_like(e) if w is block.alpha else e
                  for w, e in zip(block.weights, expected)]
    for got, want in zip(weights, expected):
      np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(model.policy.embedding.embeddings.numpy(),
                                shallow.backbone.embedding.embeddings.numpy())
  items = tf.constant(histories(id_map.num_items, 16, shallow_config.data.max_len, seed=2))
  np.testing.assert_allclose(model.backbone.score_last(items).numpy(),
                             shallow.backbone.score_last(items).numpy(), rtol=0, atol=1e-5)
  # The new blocks are live: with an alpha they change the scores.
  grown[3].alpha.assign(0.5)
  assert not np.allclose(model.backbone.score_last(items).numpy(),
                         shallow.backbone.score_last(items).numpy(), atol=1e-3)


def test_a_run_grows_once_then_trains_its_new_blocks(tmp_path, shallow_runs, monkeypatch):
  calls = []

  def counted(*args, **kwargs):
    calls.append(args[1])
    return grow_backbone(*args, **kwargs)

  monkeypatch.setattr(grow_lib, "grow_backbone", counted)
  shallow_config, workdir = shallow_runs("sasrec")
  config = _deep(shallow_config, workdir, num_blocks=4)
  result = run(config, str(tmp_path / "deep"))
  assert calls == [workdir] and result["grow_from"] == workdir
  model = builders.build_model(config, result["num_items"] + 1)
  builders.load_pretrained_backbone(model, str(tmp_path / "deep"))
  assert all(float(b.alpha) != 0.0 for b in model.backbone.blocks[2:])  # trained from 0
  # Resumed, the run keeps its own checkpoint: growing again would reset the new alphas.
  again = run(config, str(tmp_path / "deep"))
  assert calls == [workdir] and again["test"] == result["test"]


def test_growing_from_what_does_not_fit_is_a_clear_error(tmp_path, shallow_runs):
  shallow_config, workdir = shallow_runs("sasrec")
  id_map = IdMap.load(f"{workdir}/best/id_map.json")

  def grow(config):
    grow_backbone(builders.build_model(config, id_map.vocab_size), config.train.grow_from,
                  config, id_map)

  wider = _deep(shallow_config, workdir)
  wider.model.channels = 32
  with pytest.raises(ConfigError, match=r"model\.channels \(16 there, 32 here\)"):
    grow(wider)
  with pytest.raises(ConfigError, match="growing needs fewer there"):
    grow(_deep(shallow_config, workdir, num_blocks=2))
  longer = _deep(shallow_config, workdir)
  longer.data.max_len = shallow_config.data.max_len + 5          # SASRec's position table
  with pytest.raises(ConfigError, match="same data.max_len"):
    grow(longer)
  with pytest.raises(ConfigError, match="no best checkpoint"):
    grow(_deep(shallow_config, str(tmp_path / "nothing")))
  other = IdMap.from_items(np.arange(1, id_map.num_items + 1).astype(str))
  deep = _deep(shallow_config, workdir)
  with pytest.raises(ConfigError, match="id maps differ"):
    grow_backbone(builders.build_model(deep, id_map.vocab_size), workdir, deep, other)
  both = _deep(shallow_config, workdir)
  both.train.init_from = workdir
  with pytest.raises(ConfigError, match="a run starts from one of them"):
    both.validate()


def test_a_skiprec_run_grows_its_pretrain_stage(tmp_path, shallow_runs):
  # ml100k_sasrec_skiprec --override train.grow_from=...: the pretrain stage grows, and SkipRec
  # starts from that stage's best checkpoint (init_from), not from the shallow run.
  shallow_config, workdir = shallow_runs("sasrec")
  config = _deep(shallow_config, workdir, num_blocks=4, mode="gumbel")
  config.train.pretrain_epochs, config.train.epochs = 1, 1
  result = run(config, str(tmp_path / "skip"))
  stage = str(tmp_path / "skip" / "pretrain")
  assert result["init_from"] == stage
  with open(f"{stage}/metrics.json") as f:
    assert json.load(f)["grow_from"] == workdir
