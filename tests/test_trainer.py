"""The trainer's loops: `runtime.steps_per_loop` steps per tf.function call give the same run,
bit for bit, as one step per call, and loops end at epoch ends and checkpoint steps."""

import numpy as np
import pytest
import tensorflow as tf

from tf_skiprec.errors import TrainingError
from tf_skiprec.experiments import get_config
from tf_skiprec.compute import budget_for_usage
from tf_skiprec.training import run
from tf_skiprec.training.trainer import Trainer


def _skiprec_config(steps_per_loop: int):
  """SkipRec with every in-graph schedule moving and the Lagrange multiplier's dual ascent."""
  config = get_config("smoke")
  config.train.mode, config.train.pretrain_epochs, config.train.epochs = "gumbel", 1, 2
  config.train.checkpoint_every_steps = 3
  config.policy.cost, config.policy.budget = "lagrangian", budget_for_usage(config, 0.3)
  config.policy.budget_anneal_steps, config.policy.entropy_weight = 10, 0.5
  config.policy.entropy_ramp_steps, config.policy.tau_anneal_steps = 12, 14
  config.runtime.steps_per_loop = steps_per_loop
  return config


def _weights(workdir: str) -> dict:
  path = tf.train.latest_checkpoint(f"{workdir}/checkpoints")
  return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
          if name.startswith("model/")}


@pytest.fixture
def loop_sizes(monkeypatch):
  """The size of every loop the trainers run, in order."""
  sizes = []
  original = Trainer._loop_size

  def recorded(self):
    sizes.append(original(self))
    return sizes[-1]

  monkeypatch.setattr(Trainer, "_loop_size", recorded)
  return sizes


def test_steps_per_loop_gives_the_same_run_bit_for_bit(tmp_path, loop_sizes):
  one = run(_skiprec_config(1), str(tmp_path / "one"))
  assert loop_sizes == [1] * (7 + 14)                 # pretrain: 7 steps; SkipRec: 2 x 7
  loop_sizes.clear()
  five = run(_skiprec_config(5), str(tmp_path / "five"))
  # Loops of up to 5 steps, cut at each checkpoint step (every 3) and at the end of each epoch
  # (7 steps, the last a smaller batch): the pretrain stage's steps 0-7, then the SkipRec
  # stage's 0-14.
  assert loop_sizes == [3, 3, 1] + [3, 3, 1, 2, 3, 2]
  for key in ("valid", "test", "valid_blocks", "test_blocks", "threshold_sweep", "steps",
              "best_epoch"):
    assert one[key] == five[key], key
  a, b = _weights(str(tmp_path / "one")), _weights(str(tmp_path / "five"))
  assert a.keys() == b.keys() and "model/multiplier/.ATTRIBUTES/VARIABLE_VALUE" in a
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert float(a["model/multiplier/.ATTRIBUTES/VARIABLE_VALUE"]) > 0  # dual ascent ran


def test_each_loop_and_the_evaluation_step_are_traced_once_whatever_the_batch_size(
    tmp_path, monkeypatch):
  """An epoch's last training batch (214 windows = 6 x 32 + 22) and the last evaluation batch
  (120 users = 3 x 32 + 24) are smaller: neither is traced again (a trace of the 32-block
  default costs ~20 s)."""
  from tf_skiprec.training import evaluate, trainer  # noqa: PLC0415

  made = {"loops": [], "eval": []}

  def recording(module, name, key):
    original = getattr(module, name)

    def make(*args, **kwargs):
      made[key].append(original(*args, **kwargs))
      return made[key][-1]

    monkeypatch.setattr(module, name, make)

  recording(trainer, "make_train_loop", "loops")
  recording(evaluate, "make_eval_step", "eval")
  config = get_config("smoke")
  config.train.mode, config.train.pretrain_epochs, config.train.epochs = "gumbel", 1, 2
  config.policy.freeze_backbone_epochs = 1
  config.train.eval_batch_size = 32
  run(config, str(tmp_path / "w"))
  assert len(made["loops"]) == 3 and len(made["eval"]) == 2  # pretrain, frozen, SkipRec
  assert [f.experimental_get_tracing_count() for f in made["loops"] + made["eval"]] == [1] * 5


def test_stateful_random_draws_do_not_depend_on_steps_per_loop(tmp_path):
  """Dropout's masks and the sampled softmax's negatives come from stateful random ops (they
  advance with each execution): the loop runs each step through one copy of them, so n steps
  per loop draw what n loops of one step draw."""
  weights = []
  for steps_per_loop in (1, 4):
    config = get_config("smoke")
    config.model.dropout, config.model.embedding_dropout = 0.3, 0.1
    config.train.loss, config.train.num_sampled = "sampled", 20
    config.runtime.steps_per_loop = steps_per_loop
    run(config, str(tmp_path / f"w{steps_per_loop}"))
    weights.append(_weights(str(tmp_path / f"w{steps_per_loop}")))
  for name in weights[0]:
    np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)


def test_a_non_finite_loss_inside_a_loop_stops_at_the_same_step_as_one_step_per_loop(tmp_path):
  """Adam at lr 1e30 blows the weights up in one step; the loop stops after the first step whose
  loss is not finite, and the error names the same step, epoch and batch as a loop of one."""
  messages = []
  for steps_per_loop in (1, 4):
    config = get_config("smoke")
    config.train.learning_rate = 1e30
    config.runtime.steps_per_loop = steps_per_loop
    workdir = tmp_path / f"w{steps_per_loop}"
    with pytest.raises(TrainingError, match=r"step \d+ \(epoch 1, batch \d+\): the training") as e:
      run(config, str(workdir))
    messages.append(str(e.value).split(": the training")[0])
    assert not (workdir / "checkpoints" / "checkpoint").exists()  # nothing saved mid-epoch
  assert messages[0] == messages[1] and messages[0] != "step 1 (epoch 1, batch 1)", messages
