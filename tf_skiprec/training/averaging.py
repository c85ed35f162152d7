"""Weight averaging (train.ema_decay): an exponential moving average of the trainable weights,
which the run validates, selects, saves as its best model, tests and exports; training itself
goes on with the weights the optimisers update.

After the update of global step t (0-based), each average a of a weight w becomes

  a <- d_t * a + (1 - d_t) * w,   d_t = min(decay, (1 + t) / (10 + t)),

the warm-up of tf.train.ExponentialMovingAverage's num_updates, so that the first steps' averages
follow the weights instead of lagging at their starting values (d_0 = 0.1). The averages start
at the weights a stage starts from (reset: its initialisation, the pretrained backbone or the
grown one), live in the latest checkpoint (a resumed run averages on as before), and are swapped
into the model's variables only inside `swapped()`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import tensorflow as tf

WARMUP = 10.0  # d_t = min(decay, (1 + t) / (WARMUP + t))


def decay_at(decay: float, step) -> tf.Tensor:
  """d_t for global step `step` ([] int, 0-based): min(decay, (1 + t) / (10 + t)), float32."""
  t = tf.cast(step, tf.float32)
  return tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (WARMUP + t))


class WeightAverage(tf.Module):
  """The moving averages of `variables` (the model's trainable weights, in a fixed order).

  Create it under the strategy's scope: each average is a variable like the weight it follows
  (mirrored under a mirrored strategy). Checkpoint it beside the model: only the averages are
  tracked, not the weights they follow.

  Attributes:
    decay: the average's decay (0 < decay < 1).
    averages: one variable per weight, of its shape and dtype.
  """

  def __init__(self, variables: Sequence[tf.Variable], decay: float,
               strategy: tf.distribute.Strategy):
    super().__init__(name="weight_average")
    if not 0.0 < decay < 1.0:
      raise ValueError(f"decay = {decay}: an average's decay is in (0, 1).")
    self.decay = decay
    self._strategy = strategy
    # The weights are held out of the tracked attributes (in a closure), so that the checkpoint's
    # object graph reaches them only through the model.
    weights = tuple(variables)
    self._weights_held = lambda: weights
    self.averages = [tf.Variable(v.read_value(), trainable=False,
                                 name=f"average_{i}") for i, v in enumerate(variables)]

  @property
  def weights(self) -> tuple:
    """The weights averaged, in the averages' order."""
    return self._weights_held()

  def reset(self) -> None:
    """Each average to its weight's value now (eager): a stage's starting weights."""
    for average, weight in zip(self.averages, self._weights_held()):
      average.assign(weight.read_value())

  def update(self, step) -> None:
    """a <- d_t a + (1 - d_t) w for every weight, after the optimisers' update of global step
    `step` ([] int64). Call in cross-replica context (in the traced step, after strategy.run):
    each device's average follows that device's copy of the weight."""
    d = decay_at(self.decay, step)

    def move(average, weight):
      return average.assign(d * average + (1.0 - d) * weight)

    for average, weight in zip(self.averages, self._weights_held()):
      self._strategy.extended.update(average, move, args=(weight,), group=False)

  @contextlib.contextmanager
  def swapped(self) -> Iterator[None]:
    """Inside, the model's weights hold the averages; after, the training weights again, bit for
    bit (eager)."""
    saved = [w.read_value() for w in self._weights_held()]
    for weight, average in zip(self._weights_held(), self.averages):
      weight.assign(average.read_value())
    try:
      yield
    finally:
      for weight, value in zip(self._weights_held(), saved):
        weight.assign(value)
