"""serving/batching.py: TF Serving's server-side batching, with a run function whose answer is
known (each row's own sum), so that every request can be checked against its answer alone, and
batches are seen forming through the scheduler's counters, not timings."""

import threading

import numpy as np
import pytest

from serving.batching import BatchScheduler, batch_size, merge, split
from serving.batching_parameters import BatchingParameters
from tf_skiprec.export.runner import SignatureError


def _row_sums(seen: list):
  """run(): records each merged batch; y = each row's sum, scale = k per row."""
  def run(inputs):
    seen.append({a: v.copy() for a, v in inputs.items()})
    return {"y": inputs["x"].reshape(len(inputs["x"]), -1).sum(axis=1), "k": inputs["k"] * 10}
  return run


def _concurrently(scheduler, key, run, requests):
  answers, errors = [None] * len(requests), [None] * len(requests)

  def one(i):
    try:
      answers[i] = scheduler.submit(key, run, requests[i])
    except SignatureError as e:
      errors[i] = e
  threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  return answers, errors


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer():
  params = BatchingParameters(max_batch_size=16, batch_timeout_micros=2_000_000,
                              num_batch_threads=1, allowed_batch_sizes=(4, 16))
  scheduler, seen = BatchScheduler(params), []
  rng = np.random.default_rng(0)
  requests = [{"x": rng.integers(0, 9, (n, 3)), "k": rng.integers(1, 5, n)} for n in (1, 2, 1, 3)]
  answers, errors = _concurrently(scheduler, "m", _row_sums(seen), requests)
  scheduler.stop()
  assert errors == [None] * 4
  for request, answer in zip(requests, answers):
    np.testing.assert_array_equal(answer["y"], request["x"].sum(axis=1))
    np.testing.assert_array_equal(answer["k"], request["k"] * 10)
  assert scheduler.stats["batches"] == 1 and scheduler.stats["batch_sizes"] == {4: 1}
  assert len(seen[0]["x"]) == 16 and scheduler.stats["padding_rows"] == 9   # 7 rows -> 16


def test_the_batch_is_padded_with_the_last_requests_first_row_and_padding_is_dropped():
  params = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 8))
  a, b = {"x": np.array([[1, 2]]), "k": np.array([7])}, {"x": np.array([[3, 4], [5, 6]]),
                                                          "k": np.array([8, 9])}
  merged, padding = merge([a, b], params)
  assert padding == 5
  np.testing.assert_array_equal(merged["x"], [[1, 2], [3, 4], [5, 6]] + [[3, 4]] * 5)
  parts = split({"y": merged["x"].sum(axis=1)}, [1, 2], padding)
  np.testing.assert_array_equal(parts[0]["y"], [3])
  np.testing.assert_array_equal(parts[1]["y"], [7, 11])


def test_a_full_queue_answers_unavailable_and_the_scheduler_goes_on():
  params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
  scheduler, release, started = BatchScheduler(params), threading.Event(), threading.Event()

  def slow(inputs):
    started.set()
    release.wait(timeout=30)
    return {"y": inputs["x"] * 2}

  first = threading.Thread(target=scheduler.submit, args=("m", slow, {"x": np.array([1])}))
  first.start()
  started.wait(timeout=30)                      # the only thread runs the first batch
  second = threading.Thread(target=scheduler.submit, args=("m", slow, {"x": np.array([2])}))
  second.start()                                # the open batch: 1 of max_enqueued_batches 1
  for _ in range(200):
    with scheduler._cond:                      # noqa: SLF001  (wait until it is queued)
      if scheduler._queues["m"].batches:       # noqa: SLF001
        break
    threading.Event().wait(0.01)
  with pytest.raises(SignatureError) as e:
    scheduler.submit("m", slow, {"x": np.array([3])})
  assert e.value.code == "UNAVAILABLE" and "queue to which this task was submitted is full" in (
      e.value.message)
  release.set()
  first.join(timeout=30)
  second.join(timeout=30)
  assert scheduler.submit("m", slow, {"x": np.array([4])})["y"].tolist() == [8]   # serving on
  scheduler.stop()


@pytest.mark.parametrize("inputs, message", [
    ({}, "must have at least one input tensor"),
    ({"x": np.array(3)}, "must have at least one dimension"),
    ({"x": np.zeros((2, 3)), "k": np.array([1])}, "must have equal 0th-dimension size"),
])
def test_requests_that_cannot_be_batched_are_refused_before_they_are_queued(inputs, message):
  with pytest.raises(SignatureError) as e:
    batch_size(inputs)
  assert e.value.code == "INVALID_ARGUMENT" and message in e.value.message


def test_a_request_larger_than_max_batch_size_is_refused_as_tf_serving_refuses_it():
  scheduler = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
  with pytest.raises(SignatureError, match="Task size 5 is larger than maximum input batch size 4"):
    scheduler.submit("m", _row_sums([]), {"x": np.zeros((5, 2)), "k": np.ones(5)})
  scheduler.stop()


def test_unequal_shapes_fail_every_request_unless_padding_is_on():
  a, b = {"x": np.array([[1, 2, 3]])}, {"x": np.array([[4, 5]])}
  with pytest.raises(SignatureError) as e:
    merge([a, b], BatchingParameters())
  assert e.value.code == "FAILED_PRECONDITION" and "padding is turned off" in e.value.message
  merged, _ = merge([a, b], BatchingParameters(pad_variable_length_inputs=True))
  # padded at the END with the tensor's own first element: why clients left-pad to the window
  np.testing.assert_array_equal(merged["x"], [[1, 2, 3], [4, 5, 4]])


def test_outputs_without_the_batch_dimension_fail_the_batch():
  with pytest.raises(SignatureError, match="0th dimension does not equal"):
    split({"y": np.zeros(3)}, [1, 1], 0)
  with pytest.raises(SignatureError, match="has 0 dimensions"):
    split({"y": np.float32(1)}, [1], 0)


def test_different_keys_are_never_mixed_in_a_batch():
  params = BatchingParameters(max_batch_size=8, batch_timeout_micros=2_000_000,
                              num_batch_threads=2)
  scheduler, seen_a, seen_b = BatchScheduler(params), [], []
  requests = [{"x": np.full((1, 2), i), "k": np.array([i])} for i in range(4)]
  run_a, run_b = _row_sums(seen_a), _row_sums(seen_b)
  results = {}

  def one(i):
    key, run = ("a", run_a) if i % 2 else ("b", run_b)
    results[i] = scheduler.submit(key, run, requests[i])
  threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  scheduler.stop()
  assert [len(b["x"]) for b in seen_a] == [2] and [len(b["x"]) for b in seen_b] == [2]
  assert sorted(seen_a[0]["k"].tolist()) == [1, 3] and sorted(seen_b[0]["k"].tolist()) == [0, 2]
  assert all(results[i]["y"].tolist() == [2 * i] for i in range(4))
  assert scheduler._queues == {}   # noqa: SLF001  idle queues (a retired version's) are dropped
