"""Weight averaging (train.ema_decay; tf_skiprec/training/averaging.py): the average's closed
form step by step, the swap, what the checkpoints hold, a run that validates, keeps and tests the
averaged weights, a resumed run that averages on, and the rules."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.config import Config
from tf_skiprec.errors import ConfigError
from tf_skiprec.experiments import get_config
from tf_skiprec.data.run_data import RunData
from tf_skiprec.training import cluster, run
from tf_skiprec.training.averaging import WeightAverage, decay_at
from tf_skiprec.training.trainer import Trainer
from tf_skiprec.training.workdir import check_resumable

DEFAULT = tf.distribute.get_strategy()


def _expected(values: list, decay: float) -> np.ndarray:
  """The average after each update t of the weight values[t], from values[0]'s start: numpy."""
  average = np.array(values[0], np.float64)
  for t, w in enumerate(values[1:]):
    d = min(decay, (1.0 + t) / (10.0 + t))
    average = d * average + (1.0 - d) * np.asarray(w, np.float64)
  return average


def test_the_decay_warms_up_then_holds():
  assert float(decay_at(0.99, 0)) == pytest.approx(0.1)
  assert float(decay_at(0.99, 8)) == pytest.approx(0.5)
  assert float(decay_at(0.99, 890)) == pytest.approx(891 / 900)
  assert float(decay_at(0.99, 891)) == pytest.approx(0.99)  # 892 / 901 > 0.99 from here on
  assert float(decay_at(0.99, 10**6)) == pytest.approx(0.99)


def test_each_update_is_the_closed_form_in_a_traced_step():
  rng = np.random.default_rng(0)
  start = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
  weights = [tf.Variable(s) for s in start]
  average = WeightAverage(weights, 0.9, DEFAULT)
  step = tf.Variable(0, dtype=tf.int64)

  @tf.function
  def train_step(new_values):  # the training step's order: weights updated, then the average
    for w, v in zip(weights, new_values):
      w.assign(v)
    average.update(step)
    step.assign_add(1)

  history = [[s] for s in start]
  for _ in range(40):  # past the warm-up's cap: (1 + t) / (10 + t) > 0.9 from t = 81 only
    values = [rng.normal(size=s.shape).astype(np.float32) for s in start]
    train_step(values)
    for h, v in zip(history, values):
      h.append(v)
  for a, h in zip(average.averages, history):
    np.testing.assert_allclose(a.numpy(), _expected(h, 0.9), rtol=1e-5, atol=1e-6)
  average.reset()
  for a, w in zip(average.averages, weights):
    np.testing.assert_array_equal(a.numpy(), w.numpy())


def test_swapped_holds_the_averages_inside_and_the_weights_bit_for_bit_after():
  weights = [tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3) / 7.0)]
  average = WeightAverage(weights, 0.5, DEFAULT)
  average.averages[0].assign(tf.fill([2, 3], 0.25))
  before = weights[0].numpy().copy()
  with average.swapped():
    np.testing.assert_array_equal(weights[0].numpy(), np.full((2, 3), 0.25, np.float32))
  np.testing.assert_array_equal(weights[0].numpy(), before)
  with pytest.raises(RuntimeError):
    with average.swapped():
      raise RuntimeError("an evaluation that fails")
  np.testing.assert_array_equal(weights[0].numpy(), before)  # restored on the way out too
  np.testing.assert_array_equal(average.averages[0].numpy(), np.full((2, 3), 0.25, np.float32))


def test_its_checkpoint_holds_the_averages_not_the_weights(tmp_path):
  weights = [tf.Variable(tf.ones([2])), tf.Variable(tf.zeros([3, 1]))]
  average = WeightAverage(weights, 0.99, DEFAULT)
  path = tf.train.Checkpoint(average=average).save(str(tmp_path / "c"))
  names = [n for n, _ in tf.train.list_variables(path) if n.startswith("average/")]
  assert sorted(names) == ["average/averages/0/.ATTRIBUTES/VARIABLE_VALUE",
                           "average/averages/1/.ATTRIBUTES/VARIABLE_VALUE"]


def test_a_decay_outside_0_1_is_refused():
  with pytest.raises(ValueError, match="decay"):
    WeightAverage([tf.Variable(1.0)], 1.0, DEFAULT)
  config = Config()
  config.train.ema_decay = 1.0
  with pytest.raises(ConfigError, match="train.ema_decay"):
    config.validate()


MIRRORED = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_skiprec.training.averaging import WeightAverage
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      w = tf.Variable(tf.zeros([3]))
      average = WeightAverage([w], 0.5, strategy)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def train_step(value):
      w.assign(value)  # cross-replica: every replica's copy
      average.update(step)
      step.assign_add(1)

    expected = np.zeros(3)
    for t in range(12):
      value = np.full(3, t + 1.0, np.float32)
      train_step(value)
      d = min(0.5, (1.0 + t) / (10.0 + t))
      expected = d * expected + (1 - d) * value
    for copy in strategy.experimental_local_results(average.averages[0]):
      print("COPY", copy.device, np.abs(copy.numpy() - expected).max())
""")


def test_under_a_mirrored_strategy_every_replicas_average_is_the_closed_form():
  out = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  copies = [line.split() for line in out.stdout.splitlines() if line.startswith("COPY")]
  assert len(copies) == 2 and copies[0][1] != copies[1][1], copies  # one copy a device
  assert all(float(c[2]) < 1e-5 for c in copies), copies


def _config(mode: str = "pretrain", *overrides: str) -> Config:
  config = get_config("smoke")
  for o in ("train.ema_decay=0.9", "runtime.progress=false", f"train.mode={mode}", *overrides):
    config.override(o)
  return config


def _trainer(config: Config, workdir: str) -> Trainer:
  """A trainer of `config` on `workdir`'s data, nothing restored yet."""
  data = RunData.load(config.data, config.train.window_stride)
  return Trainer(config, workdir, data, cluster.make_strategy("default"))


@pytest.mark.parametrize("mode", ["pretrain", "gumbel"])
def test_a_run_keeps_the_averaged_weights_as_its_best_and_trains_on_its_own(tmp_path, mode):
  """One epoch (so it is the best): the best checkpoint holds exactly the averages of the latest
  one, which differ from the training weights beside them; the run's test metrics are those of
  the best checkpoint's weights."""
  workdir = str(tmp_path / "w")
  extra = ("train.pretrain_epochs=1",) if mode == "gumbel" else ()
  config = _config(mode, "train.epochs=1", *extra)
  result = run(config, workdir)
  trainer = _trainer(config, workdir)
  assert trainer.checkpoints.restore_latest() == result["steps"]
  training = [v.numpy() for v in trainer.average.weights]
  averages = [a.numpy() for a in trainer.average.averages]
  assert len(averages) == len(trainer.model.trainable_variables)
  trainer.checkpoints.restore_best()
  best = [v.numpy() for v in trainer.average.weights]
  for b, a in zip(best, averages):
    np.testing.assert_array_equal(b, a)
  assert any(not np.array_equal(t, a) for t, a in zip(training, averages))
  trainer.restore(None)  # the evaluator; the checkpoint is restored again, the best then put back
  trainer.checkpoints.restore_best()
  test = trainer.evaluate(trainer.data.test, config.policy.threshold, config.policy.cap)
  assert test["metrics"]["NDCG@10"] == pytest.approx(result["test"]["NDCG@10"], abs=1e-6)


def test_a_resumed_run_averages_on_as_an_uninterrupted_one(tmp_path):
  """Two epochs in one go, or one and then one more from the latest checkpoint: the same
  averages, bit for bit (a resume that started the average again would differ)."""
  whole = run(_config("pretrain", "train.epochs=2"), str(tmp_path / "whole"))
  run(_config("pretrain", "train.epochs=1"), str(tmp_path / "parts"))
  parts = run(_config("pretrain", "train.epochs=2"), str(tmp_path / "parts"),
              continue_finished=True)
  assert parts["resumed_from_step"] > 0
  for key in ("valid", "test", "steps", "best_epoch"):
    assert parts[key] == whole[key], key
  trainers = [_trainer(_config("pretrain", "train.epochs=2"), str(tmp_path / d))
              for d in ("whole", "parts")]
  for t in trainers:
    t.checkpoints.restore_latest()
  for a, b in zip(*(t.average.averages for t in trainers)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_no_decay_keeps_no_average_and_a_work_directory_resumes_only_with_its_decay(tmp_path):
  workdir = str(tmp_path / "w")
  config = _config("pretrain", "train.epochs=1", "train.ema_decay=0")
  run(config, workdir)
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  assert not any(n.startswith("average/") for n, _ in tf.train.list_variables(latest))
  with pytest.raises(ConfigError, match=r"train.ema_decay = 0.0.*this run has 0.9.*Fix.*"
                                        r"--override train.ema_decay=0.0"):
    check_resumable(_config("pretrain", "train.epochs=2"), workdir)


def test_a_stage_from_a_pretrained_backbone_averages_from_its_weights(tmp_path):
  """A SkipRec stage starting from train.init_from: the averages start at the pretrained weights
  it loads, not at the random ones it was built with."""
  pretrain = str(tmp_path / "pretrain")
  run(_config("pretrain", "train.epochs=1"), pretrain)
  trainer = _trainer(_config("gumbel", f"train.init_from={pretrain}"), str(tmp_path / "g"))
  built = [a.numpy() for a in trainer.average.averages]
  trainer.restore(pretrain)
  weights = [v.numpy() for v in trainer.average.weights]
  for a, w in zip(trainer.average.averages, weights):
    np.testing.assert_array_equal(a.numpy(), w)
  assert any(not np.array_equal(b, w) for b, w in zip(built, weights))
