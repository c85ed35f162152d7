"""TF Serving set-up, the gRPC client and the local PredictionService server (see README.md)."""

import tf_skiprec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
