"""The SASRec backbone and its attention block (tf_skiprec/backbones/sasrec.py,
tf_skiprec/attention.py): causality, padding, SkipRec's mask semantics, skipping against
per-row masking, and a config round trip. Known answers, no training."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.attention import AttentionBlock
from tf_skiprec.backbones.sasrec import SASRec

V, L, C, N = 30, 10, 16, 4


def _sasrec(**kwargs) -> SASRec:
  """A SASRec whose blocks do something (ReZero alphas 0.6, not the initial 0)."""
  model = SASRec(V, L, channels=C, num_blocks=N, num_heads=2, inner_size=24, **kwargs)
  model(tf.ones([1, L], tf.int32))
  for block in model.blocks:
    block.alpha.assign(0.6)
  return model


def _histories(batch: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, V, size=(batch, L)).astype(np.int32)
  for row in range(batch):
    ids[row, : max(0, L - 2 - 2 * row)] = 0          # left padding; row 0 has 2 items
  return ids


def test_changing_item_t_leaves_the_outputs_before_t_unchanged():
  model = _sasrec()
  ids = _histories(1, seed=1)
  ids[0, :] = np.arange(1, L + 1)                      # no padding
  mask = tf.constant([[1, 0, 1, 1]], tf.float32)
  before = model(ids, block_mask=mask).numpy()
  for t in (3, 7):
    changed = ids.copy()
    changed[0, t] = (ids[0, t] % (V - 1)) + 1
    after = model(changed, block_mask=mask).numpy()
    np.testing.assert_array_equal(after[0, :t], before[0, :t])
    assert np.abs(after[0, t:] - before[0, t:]).max() > 1e-4   # and it does change t on


def test_a_left_padded_history_scores_as_the_unpadded_one():
  model = _sasrec()
  history = np.array([[5, 9, 2, 7]], np.int32)
  padded = np.concatenate([np.zeros([1, L - 4], np.int32), history], axis=1)
  mask = tf.constant([[1, 1, 0, 1]], tf.float32)
  np.testing.assert_allclose(model.score_last(padded, mask).numpy(),
                             model.score_last(history, mask).numpy(), atol=1e-5)
  hidden = model(padded, block_mask=mask).numpy()
  assert np.all(hidden[0, : L - 4] == 0) and np.isfinite(hidden).all()   # padding stays zero


def test_a_mask_of_ones_is_no_mask_and_a_mask_of_zeros_is_the_embedding():
  model = _sasrec()
  ids = _histories(4)
  np.testing.assert_array_equal(model(ids, block_mask=tf.ones([4, N])).numpy(),
                                model(ids).numpy())
  embedded, _ = model.embed(tf.constant(ids), training=False)
  np.testing.assert_array_equal(model(ids, block_mask=tf.zeros([4, N])).numpy(),
                                embedded.numpy())


def test_each_row_runs_exactly_the_blocks_its_mask_keeps():
  """x + m * F(x) per row, against running the kept blocks on that row alone."""
  model = _sasrec()
  ids = _histories(4, seed=2)
  mask = np.array([[1, 0, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]], np.float32)
  hidden = model(ids, block_mask=tf.constant(mask)).numpy()
  for row in range(4):
    x, seq_mask = model.embed(tf.constant(ids[row:row + 1]), training=False)
    for i, block in enumerate(model.blocks):
      if mask[row, i]:
        x = block(x, seq_mask)
    np.testing.assert_allclose(hidden[row], x.numpy()[0], atol=1e-5)


def test_at_zero_alpha_every_block_is_the_identity():
  model = SASRec(V, L, channels=C, num_blocks=N)
  ids = _histories(3)
  embedded, _ = model.embed(tf.constant(ids), training=False)
  np.testing.assert_array_equal(model(ids).numpy(), embedded.numpy())


def test_padded_keys_are_never_attended_to():
  seq_mask = tf.constant([[[0.0], [1.0], [1.0]]])
  allowed = AttentionBlock.attention_mask(seq_mask).numpy()[0]
  np.testing.assert_array_equal(allowed, [[False, False, False],    # a padded query: nothing
                                          [False, True, False],
                                          [False, True, True]])


def test_config_round_trip():
  model = _sasrec(dropout=0.1, tie_embeddings=True, activation="gelu")
  config = model.get_config()
  again = SASRec.from_config(config)
  assert again.get_config() == config and again.blocks[1].activation == "gelu"
  block = model.blocks[0]
  assert AttentionBlock.from_config(block.get_config()).get_config() == block.get_config()
  with pytest.raises(ValueError, match="multiple of num_heads"):
    AttentionBlock(10, num_heads=3)
  with pytest.raises(ValueError, match="activation 'tanh'"):
    AttentionBlock(8, activation="tanh")


def test_the_feed_forward_activation_is_the_exact_gelu_when_configured():
  """model.activation=gelu: the feed-forward layer applies 0.5 z (1 + erf(z / sqrt 2)), the exact
  GELU (RecBole's), not the tanh approximation and not ReLU."""
  block = AttentionBlock(8, num_heads=2, inner_size=12, activation="gelu")
  block(tf.random.normal([2, 5, 8], seed=1), tf.ones([2, 5, 1]))
  h = np.random.default_rng(0).normal(0.0, 2.0, [6, 8]).astype(np.float32)
  z = h @ block.inner.kernel.numpy() + block.inner.bias.numpy()
  exact = 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
  np.testing.assert_allclose(block.inner(h).numpy(), exact, atol=1e-5)
  assert (z < -0.5).any()                              # where ReLU would give 0 and GELU not


@pytest.mark.parametrize("num_blocks", [1, 24])
def test_one_to_24_blocks_build_from_the_config_and_each_block_counts(num_blocks):
  from conftest import set_alphas
  from tf_skiprec.experiments import get_config
  from tf_skiprec.training import builders
  config = get_config("smoke").override("model.backbone=sasrec")
  config.model.num_blocks = num_blocks
  config.validate()
  model = builders.build_model(config, vocab_size=V)
  assert type(model.backbone).__name__ == "SASRec" and len(model.backbone.blocks) == num_blocks
  set_alphas(model.backbone, 0.5)
  ids = tf.constant(_histories(3))
  scores = model.score(ids, block_mask=tf.ones([3, num_blocks])).numpy()
  assert scores.shape == (3, V) and np.isfinite(scores[:, 1:]).all()
  last_off = np.ones([3, num_blocks], np.float32)
  last_off[:, -1] = 0                                    # the deepest block changes the scores
  assert np.abs(model.score(ids, block_mask=last_off).numpy()[:, 1:] - scores[:, 1:]).max() > 1e-4


def test_a_window_longer_than_the_position_table_is_refused():
  model = _sasrec()
  with pytest.raises(ValueError, match="position embeddings for 10.*Fix"):
    model(tf.ones([1, L + 1], tf.int32))


def test_the_untied_head_norm_has_no_affine_weights_the_softmax_absorbs_them():
  rng = np.random.default_rng(4)
  untied, tied = _sasrec(), _sasrec(tie_embeddings=True)
  h = tf.constant(rng.normal(1.0, 3.0, size=(3, L, C)).astype(np.float32))
  untied.logits(h), tied.logits(h)                                   # builds both heads
  assert not untied.head_norm.weights and len(tied.head_norm.weights) == 2
  x = h.numpy()
  n = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  w, b = untied.output_dense.kernel.numpy(), untied.output_dense.bias.numpy()
  np.testing.assert_allclose(untied.logits(h).numpy(), n @ w + b, atol=1e-4)
  # What a gamma and beta would add, the softmax's own weights express exactly.
  gamma, beta = rng.uniform(0.5, 2.0, C), rng.normal(0.0, 1.0, C)
  np.testing.assert_allclose((n * gamma + beta) @ w + b,
                             n @ (gamma[:, None] * w) + (beta @ w + b), atol=1e-4)
