import json

import pytest

from tf_skiprec.config import Config, get_config
from tf_skiprec.errors import ConfigError


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
