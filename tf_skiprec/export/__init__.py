"""Export for TF Serving, and running an export as TF Serving does.

  exporter.py        the versioned, atomic, self-checked SavedModel with its assets and warm-up
  serving_module.py  the exported tf.Module: raw ids in and out, conditional execution of blocks,
                     the three signatures
  frozen.py          inference copies of the blocks and the policy with constant weights
  runner.py          runs a SavedModel's signatures as TF Serving does; the one module the
                     servers (serving/) import

Nothing is imported here, so that `tf_skiprec.export.runner` loads without the model code.
"""
