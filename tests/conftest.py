"""Test set-up: tf_skiprec is imported first so Keras 2 is selected before TensorFlow loads."""

import tf_skiprec  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _seed():
  tf.keras.utils.set_random_seed(1234)
  np.random.seed(1234)
  yield


def set_alphas(backbone, value: float = 0.5) -> None:
  """ReZero alphas start at 0 (every block is the identity); tests that need the blocks to do
  something set them."""
  for block in backbone.blocks:
    block.alpha.assign(value)
