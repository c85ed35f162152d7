"""serving/batching_parameters.py: TF Serving's BatchingParameters file, its defaults for absent
fields and its checks (bundle_factory_util.h / .cc), with errors that name the file and the fix."""

import os

import pytest

from serving.batching_parameters import BatchingConfigError, BatchingParameters, parse, read

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_shipped_file_reads_as_tf_serving_reads_it():
  params = read(os.path.join(REPO, "serving", "batching_parameters.txt"))
  assert params == BatchingParameters(max_batch_size=64, batch_timeout_micros=2000,
                                      max_enqueued_batches=100, num_batch_threads=4,
                                      allowed_batch_sizes=(1, 2, 4, 8, 16, 32, 64),
                                      pad_variable_length_inputs=False)


def test_absent_fields_take_tf_servings_defaults():
  params = parse("# nothing set\n")
  assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches) == (
      1000, 0, 10)
  assert params.num_batch_threads == (os.cpu_count() or 1)
  assert params.allowed_batch_sizes == () and params.pad_variable_length_inputs is False
  # TF Serving's AddQueue: without batch splitting, 0 enqueued batches means 1.
  assert parse("max_enqueued_batches { value: 0 }").max_enqueued_batches == 1


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"),
    ("allowed_batch_sizes: 1000", None),                          # the default max_batch_size
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 2\n"
     "allowed_batch_sizes: 8", "must be positive and strictly increasing"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
    ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative; was -1"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive; was 0"),
    ("enable_large_batch_splitting { value: true }", "the local server does not split batches"),
    ("max_batch_size: 8", "1:17 : 'max_batch_size: 8': Expected \"{\""),   # a wrapper, as in TF
    ("max_batch_size { value: 8 }\nmax_batch_szie { value: 8 }",
     "2:1 : Message type \"tensorflow.serving.BatchingParameters\" has no field named "
     "\"max_batch_szie\""),
])
def test_what_tf_serving_refuses_is_refused_naming_the_file_and_the_fix(text, message):
  if message is None:
    assert parse(text, "b.txt").allowed_batch_sizes == (1000,)
    return
  with pytest.raises(BatchingConfigError) as e:
    parse(text, "b.txt")
  assert str(e.value).startswith("b.txt: ") and message in str(e.value)
  assert "Fix:" in str(e.value)


def test_an_unreadable_file_is_named(tmp_path):
  with pytest.raises(BatchingConfigError, match="--batching_parameters_file=.*nope.txt: cannot "
                                                "read it"):
    read(str(tmp_path / "nope.txt"))


def test_the_servers_flags_follow_tensorflow_model_server():
  from absl import app

  from serving.server import batching_parameters
  assert batching_parameters(False, None) is None
  defaults = batching_parameters(True, None)          # no file: TF Serving's defaults
  assert defaults.max_batch_size == 1000 and defaults.thread_pool_name == (
      "model_server_batch_threads")
  shipped = os.path.join(REPO, "serving", "batching_parameters.txt")
  assert batching_parameters(True, shipped).max_batch_size == 64
  with pytest.raises(app.UsageError, match="needs --enable_batching"):
    batching_parameters(False, shipped)
