"""Data: file readers, the id map, the splits, tf.data pipelines and the synthetic generator."""
