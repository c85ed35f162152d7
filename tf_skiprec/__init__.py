"""tf_skiprec: SkipRec (user-adaptive layer skipping) on a very deep NextItNet+, in Keras 2.

Importing the package selects Keras 2 (`tf_keras`) for TensorFlow: TFRS refuses Keras 3, so the
whole project runs on `tf_keras`. `TF_USE_LEGACY_KERAS=1` must be in the environment before
TensorFlow is first imported; this module sets it, and fails with a clear message when
TensorFlow was imported earlier with Keras 3 active.
"""

import os

_LEGACY = os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if _LEGACY not in ("1", "true", "True"):
  raise ImportError(
      f"tf_skiprec needs Keras 2 (tf_keras) but TF_USE_LEGACY_KERAS={_LEGACY!r}. "
      "Fix: unset it or set TF_USE_LEGACY_KERAS=1 before starting Python.")

import tensorflow as tf  # noqa: E402  (must come after the environment is set)
import tf_keras  # noqa: E402

if not tf.keras.__name__.startswith("tf_keras"):
  raise ImportError(
      "Keras 3 is active for TensorFlow (tf.keras is "
      f"{tf.keras.__name__}), but tf_skiprec and TFRS need Keras 2. This happens when "
      "TensorFlow is imported before tf_skiprec without TF_USE_LEGACY_KERAS=1. "
      "Fix: export TF_USE_LEGACY_KERAS=1, or import tf_skiprec before tensorflow.")

__version__ = "0.1.0"
