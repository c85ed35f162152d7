import json

import pytest

from tf_skiprec.config import Config, parse_value
from tf_skiprec.config_rules import CHOICES, RANGES
from tf_skiprec.errors import ConfigError
from tf_skiprec.experiments import EXPERIMENTS, get_config


def test_overrides_parse_by_field_type():
  config = get_config("default")
  for a in ("model.num_blocks=32", "model.dilations=1,2,4", "train.learning_rate=3e-4",
            "model.tie_embeddings=true", "data.dataset=recbole:/x", "data.synthetic.lag=30"):
    config.override(a)
  assert config.model.num_blocks == 32 and config.model.dilations == (1, 2, 4)
  assert config.train.learning_rate == 3e-4 and config.model.tie_embeddings is True
  assert config.data.dataset == "recbole:/x" and config.data.synthetic.lag == 30


@pytest.mark.parametrize("assignment, message", [
    ("model.num_blocks=many", "not a valid int"),
    ("model.nope=1", "model has no field 'nope'"),
    ("num_blocks", "expected key=value"),
])
def test_bad_overrides_name_the_field(assignment, message):
  with pytest.raises(ConfigError, match=message):
    get_config("default").override(assignment)


def test_json_round_trip_and_errors(tmp_path):
  config = get_config("smoke")
  path = tmp_path / "c.json"
  path.write_text(config.to_json())
  assert Config.from_json_file(str(path)) == config
  path.write_text(json.dumps({"model": {"width": 3}}))
  with pytest.raises(ConfigError, match=r"c.json.model: unknown field\(s\) \['width'\]"):
    Config.from_json_file(str(path))
  path.write_text("{\n  oops")
  with pytest.raises(ConfigError, match="c.json:2: not valid JSON"):
    Config.from_json_file(str(path))


# ------------------------------------------------------------------------------------------------
# Config.validate(): every enum, every range, a few rules between fields.


def _outside(spec: str, integer: bool):
  """A value just outside a range written as in config_rules.RANGES."""
  if spec.startswith(">="):
    bound = float(spec[2:])
    return int(bound) - 1 if integer else bound - 0.5
  if spec.startswith(">"):
    bound = float(spec[1:])
    return int(bound) if integer else bound
  low, high = (float(x) for x in spec[1:-1].split(","))
  return high if spec.endswith(")") else high + 1.0


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_enumerated_field_refuses_an_unknown_value_and_lists_the_valid_ones(key):
  config = get_config("smoke")
  owner, name, _ = config.field(key, "test")
  setattr(owner, name, "bogus")
  with pytest.raises(ConfigError) as e:
    config.validate()
  message = str(e.value)
  assert f"{key} = 'bogus'" in message
  assert all(repr(choice) in message for choice in CHOICES[key])   # the valid values
  assert f"Fix: --override {key}=" in message


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_number_refuses_a_value_out_of_its_range(key):
  config = get_config("smoke")
  owner, name, hint = config.field(key, "test")
  value = getattr(owner, name)
  bad = _outside(RANGES[key], isinstance(value, (int, tuple)) and not isinstance(value, float))
  setattr(owner, name, (int(bad),) if isinstance(value, tuple) else bad)
  with pytest.raises(ConfigError) as e:
    config.validate()
  message = str(e.value)
  assert message.count("\n") == 1, message                         # this problem alone
  assert key in message and "must be" in message and RANGES[key].split()[-1] in message
  fix = message.split(f"Fix: --override {key}=")[1].split()[0]     # a value that is valid
  setattr(owner, name, parse_value(fix, hint, key))
  config.validate()


@pytest.mark.parametrize("assignment, message", [
    ("model.num_blocks=-3", "model.num_blocks = -3: must be >= 1"),
    ("train.batch_size=0", "train.batch_size = 0: must be >= 1"),
    ("model.dilations=1,0", "model.dilations = 1,0: each value must be >= 1"),
    ("data.synthetic.min_length=100", "data.synthetic.min_length = 100 is above"),
    ("data.dataset=recbole:/no/such/dir", "/no/such/dir does not exist"),
    ("data.dataset=parquet:/x", "unknown format 'parquet'"),
    ("export.model_name=a/b", "must be a folder name"),
    ("model.backbone=sasrec;model.num_heads=3", "model.num_heads = 3: model.channels = 16 is not a "
     "multiple of it"),
    ("policy.max_blocks=9", "policy.max_blocks = 9 is above model.num_blocks = 4"),
    ("model.activation=gelu", "model.activation = 'gelu': NextItNet+'s blocks are ReLU"),
])
def test_the_cases_a_new_user_meets_are_named_with_their_fix(assignment, message):
  config = get_config("smoke")
  for one in assignment.split(";"):
    config = config.override(one)
  with pytest.raises(ConfigError, match="Fix:") as e:
    config.validate()
  assert message in str(e.value)


def test_a_wrong_type_in_a_config_file_is_named(tmp_path):
  path = tmp_path / "c.json"
  path.write_text(json.dumps({"train": {"batch_size": "64"}, "model": {"dropout": True}}))
  with pytest.raises(ConfigError) as e:
    Config.from_json_file(str(path)).validate()
  assert "train.batch_size = '64' (str): must be an integer" in str(e.value)
  assert "model.dropout = True (bool): must be a finite number" in str(e.value)


def test_every_experiment_is_valid_and_the_ml100k_ones_need_a_dataset(tmp_path):
  (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
  for name in EXPERIMENTS:
    config = get_config(name)
    if name.startswith("ml100k"):
      with pytest.raises(ConfigError, match="data.dataset is not set.*--dataset=recbole:"):
        config.validate()
      config.data.dataset = f"recbole:{tmp_path}"
    assert config.validate() is config
  assert Config().validate()


def test_a_config_file_from_before_the_runtime_section_still_loads(tmp_path):
  old = json.loads(get_config("smoke").to_json())
  runtime = old.pop("runtime")
  old["train"].update(strategy="mirrored", progress=runtime["progress"])
  path = tmp_path / "old.json"
  path.write_text(json.dumps(old))
  config = Config.from_json_file(str(path))
  assert config.runtime.strategy == "mirrored" and config.runtime.progress is False


def test_the_named_sasrec_recipes_are_the_bench_variants_measured():
  """bench/sasrec_ml100k.py measured `ml100k_sasrec_2` as the variant sas2_gelu_s5 and
  `ml100k_sasrec_2_w25` as sas2_gelu: each variant's config must be the named experiment's."""
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "bench"))
  from ml100k_variants import VARIANTS  # bench/ml100k_variants.py

  def measured(variant):
    config = get_config(VARIANTS[variant].experiment)
    for assignment in VARIANTS[variant].overrides:
      config.override(assignment)
    return {**config.to_dict(), "name": None}

  for name, variant in (("ml100k_sasrec_2", "sas2_gelu_s5"),
                        ("ml100k_sasrec_2_w25", "sas2_gelu")):
    assert measured(variant) == {**get_config(name).to_dict(), "name": None}, (name, variant)
  recipes = [measured(v) for v in ("sas2_gelu_prefix", "sas2_gelu_s5", "sas2_gelu")]
  assert all(a != b for i, a in enumerate(recipes) for b in recipes[i + 1:])
  assert get_config("ml100k_sasrec_2").train.window_stride == 5
