"""The training schedules, computed in the graph from the global step: closed forms."""

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.schedules import Schedules


def _traced(fn):
  """fn evaluated as the train step does: inside a tf.function, on an int64 step tensor."""
  f = tf.function(fn)
  return lambda step: float(f(tf.constant(step, tf.int64)))


def test_temperature_schedules():
  s = Schedules(tau_start=4.0, tau_end=0.25, tau_anneal_steps=100)
  tau = _traced(s.temperature)
  assert tau(0) == 4.0
  assert tau(50) == pytest.approx(1.0)      # geometric midpoint: 4 * (1/16)^(1/2)
  assert tau(100) == pytest.approx(0.25) and tau(500) == pytest.approx(0.25)
  linear = _traced(Schedules(tau_start=4.0, tau_end=0.25, tau_schedule="linear",
                             tau_anneal_steps=100).temperature)
  assert linear(50) == pytest.approx(2.125)  # 4 + 0.5 * (0.25 - 4)
  constant = _traced(Schedules(tau_start=3.0, tau_schedule="constant").temperature)
  assert constant(0) == constant(10_000) == 3.0


def test_budget_anneals_from_one_to_the_target():
  budget = _traced(Schedules(budget=0.2, budget_anneal_steps=100).budget)
  assert [budget(s) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
  assert _traced(Schedules(budget=0.2).budget)(0) == pytest.approx(0.2)


def test_entropy_weight_ramps_up_from_zero():
  weight = _traced(Schedules(entropy_weight=2.0, entropy_ramp_steps=100).entropy_weight)
  assert [weight(s) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
  assert _traced(Schedules(entropy_weight=2.0).entropy_weight)(0) == 2.0


def test_compute_cost_scale_ramps_up_from_zero():
  scale = _traced(Schedules(compute_cost_ramp_steps=200).compute_cost_scale)
  assert [scale(s) for s in (0, 50, 200, 900)] == [0.0, 0.25, 1.0, 1.0]
  assert _traced(Schedules().compute_cost_scale)(0) == 1.0


def test_dual_ascent_step_known_values():
  s = Schedules(dual_lr=0.5)
  def step(multiplier, usage, target):
    return float(s.dual_ascent(tf.constant(multiplier), tf.constant(usage), tf.constant(target)))

  assert step(1.0, 0.7, 0.5) == pytest.approx(1.1)   # 1 + 0.5 * 0.2
  assert step(1.0, 0.3, 0.5) == pytest.approx(0.9)
  assert step(0.05, 0.0, 0.5) == 0.0                 # never below 0


def test_float32_values_equal_the_same_formulas_in_python_float64():
  """The schedules round a float64 computation to float32 once, as the loop did when it
  computed them in Python and assigned them to float32 variables: equal to the last bit."""
  s = Schedules(tau_start=5.0, tau_end=0.5, tau_anneal_steps=600, budget=0.1,
                budget_anneal_steps=150, entropy_weight=1.0, entropy_ramp_steps=200)
  tau, budget, weight = (tf.function(f) for f in (s.temperature, s.budget, s.entropy_weight))
  for step in range(0, 700):
    t = tf.constant(step, tf.int64)
    assert tau(t).numpy() == np.float32(5.0 * (0.5 / 5.0) ** min(step / 600, 1.0))
    assert budget(t).numpy() == np.float32(1.0 + min(step / 150, 1.0) * (0.1 - 1.0))
    assert weight(t).numpy() == np.float32(1.0 * min(step / 200, 1.0))
