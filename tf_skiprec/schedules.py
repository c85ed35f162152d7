"""SkipRec's training schedules, as functions of the global step computed inside the traced step.

Each takes the step (an int64 tensor, or a Python int in tests) and returns a float32 scalar:
  temperature(step): the Gumbel-softmax temperature, from `tau_start` to `tau_end` over
    `tau_anneal_steps` ("exponential": tau_start * (tau_end / tau_start)^f, "linear", or
    "constant" tau_start), f = min(step / tau_anneal_steps, 1);
  budget(step): the target mean usage, falling linearly from 1 to `budget` over
    `budget_anneal_steps` (constant when 0);
  entropy_weight(step): the entropy term's weight, rising linearly from 0 to `entropy_weight`
    over `entropy_ramp_steps` (constant when 0);
  compute_cost_scale(step): the fraction of policy.compute_cost (rl) charged at `step`, rising
    linearly from 0 to 1 over `compute_cost_ramp_steps` (1 when 0);
and `dual_ascent(multiplier, usage, target)` is one step of the Lagrange multiplier of
policy.cost "lagrangian": max(0, multiplier + dual_lr * (usage - target)).

The arithmetic is in float64 and rounded to float32 once, as the values were when the loop
computed them in Python and assigned them to float32 variables: the schedules give the same
float32 numbers, step for step (tests/test_schedules.py compares them with closed forms). A value
that does not change (a constant schedule, no annealing) is still computed from the step: a graph
constant would be folded into the ops that use it, which then round differently (a quotient by a
constant becomes a product with its reciprocal), and training would no longer reproduce, bit for
bit, runs whose values came from variables.
"""

from __future__ import annotations

import tensorflow as tf

from tf_skiprec.config_rules import CHOICES


class Schedules:
  """The schedules of one SkipRec run (see the module docstring for each formula)."""

  def __init__(self, *, tau_start: float = 5.0, tau_end: float = 0.5,
               tau_schedule: str = "exponential", tau_anneal_steps: int = 2000,
               budget: float = 0.5, budget_anneal_steps: int = 0, entropy_weight: float = 0.0,
               entropy_ramp_steps: int = 0, dual_lr: float = 1.0,
               compute_cost_ramp_steps: int = 0):
    if tau_schedule not in CHOICES["policy.tau_schedule"]:
      raise ValueError(f"tau_schedule={tau_schedule!r}: not one of "
                       f"{CHOICES['policy.tau_schedule']}")
    self.tau_start = float(tau_start)
    self.tau_end = float(tau_end)
    self.tau_schedule = tau_schedule
    self.tau_anneal_steps = int(tau_anneal_steps)
    self.target = float(budget)
    self.budget_anneal_steps = int(budget_anneal_steps)
    self.max_entropy_weight = float(entropy_weight)
    self.entropy_ramp_steps = int(entropy_ramp_steps)
    self.dual_lr = float(dual_lr)
    self.compute_cost_ramp_steps = int(compute_cost_ramp_steps)

  def temperature(self, step) -> tf.Tensor:
    """[] float32: the Gumbel-softmax temperature at `step`."""
    if self.tau_schedule == "constant":
      return _f32(_held(step, self.tau_start))
    frac = _fraction(step, max(self.tau_anneal_steps, 1))
    if self.tau_schedule == "linear":
      return _f32(self.tau_start + frac * (self.tau_end - self.tau_start))
    return _f32(self.tau_start * tf.pow(tf.constant(self.tau_end / self.tau_start, tf.float64),
                                        frac))

  def budget(self, step) -> tf.Tensor:
    """[] float32: the usage target at `step`."""
    if self.budget_anneal_steps <= 0:
      return _f32(_held(step, self.target))
    return _f32(1.0 + _fraction(step, self.budget_anneal_steps) * (self.target - 1.0))

  def entropy_weight(self, step) -> tf.Tensor:
    """[] float32: the entropy term's weight at `step`."""
    return _f32(self.max_entropy_weight * _ramp(step, self.entropy_ramp_steps))

  def compute_cost_scale(self, step) -> tf.Tensor:
    """[] float32: the fraction of the compute cost (rl) charged at `step`."""
    return _f32(_ramp(step, self.compute_cost_ramp_steps))

  def dual_ascent(self, multiplier, usage, target) -> tf.Tensor:
    """[] float32: the multiplier after one dual-ascent step from `multiplier` at mean `usage`
    against `target` (all float32 scalars); never below 0."""
    value = (_f64(multiplier) + self.dual_lr * (_f64(usage) - _f64(target)))
    return _f32(tf.maximum(tf.constant(0.0, tf.float64), value))


def _held(step, value: float) -> tf.Tensor:
  """`value` at every step, in float64, computed from the step (not a graph constant)."""
  return tf.constant(value, tf.float64) + 0.0 * tf.cast(step, tf.float64)


def _fraction(step, steps: int) -> tf.Tensor:
  """min(step / steps, 1) in float64."""
  return tf.minimum(tf.cast(step, tf.float64) / float(steps), tf.constant(1.0, tf.float64))


def _ramp(step, steps: int) -> tf.Tensor:
  """min(step / steps, 1) in float64, rising from 0; 1 at every step when steps <= 0."""
  return _held(step, 1.0) if steps <= 0 else _fraction(step, steps)


def _f64(x) -> tf.Tensor:
  return tf.cast(x, tf.float64)


def _f32(x) -> tf.Tensor:
  return tf.cast(x, tf.float32)
