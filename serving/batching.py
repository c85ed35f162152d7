"""TF Serving's server-side batching, for the local server's --enable_batching.

Concurrent requests with the same key (the local server's: model, version, signature, the input
aliases sent and the outputs asked for; TF Serving's: the input and output tensor names of a
servable version's session) wait in that key's queue, are merged along dimension 0, run once,
and split back. `num_batch_threads` threads serve every queue, round-robin, one batch each at a
time. What TF Serving does in each corner, and does here (its source: batching_session.cc,
batching_util.cc, bundle_factory_util.cc and TensorFlow's shared_batch_scheduler.h):

- A request's inputs must each have a dimension 0, all of the same size, and that size must be
  at most max_batch_size: INVALID_ARGUMENT otherwise, before it is queued.
- The open batch takes a request while it fits (sizes up to max_batch_size). One that does not
  fit closes it and opens the next; if the queue already holds max_enqueued_batches batches (the
  open one counted), the request is refused with UNAVAILABLE ("... queue ... is full").
- A batch is run when it is full, when a newer batch has closed it, or when batch_timeout_micros
  have passed since its first request came; a free thread takes it then.
- Merging: tensors of one alias must have the same dtype and the same dimensions after the first.
  If they do not, every request in the batch fails: FAILED_PRECONDITION with
  pad_variable_length_inputs off; with it on, each is padded at the END of each dimension with
  its own first element (ranks 1 to 6). The merged batch is then padded up to the next of
  allowed_batch_sizes with copies of the last request's first row, and those rows are dropped
  from the outputs.
- Splitting: every output must have the batch (padding included) as its dimension 0, or every
  request fails with FAILED_PRECONDITION.

`stats` counts batches and their sizes, so a test can see batches form without timing them.

  scheduler = BatchScheduler(params)                # serving.batching_parameters.BatchingParameters
  outputs = scheduler.submit(key, run, inputs)      # run(merged inputs) -> outputs, all [B, ...]
  scheduler.stop()
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Hashable

import numpy as np

from serving.batching_parameters import BatchingParameters
from tf_skiprec.export.runner import SignatureError

MAX_PAD_RANK = 6  # TF Serving pads tensors of rank 1 to 6


class _Task:
  """One request: its inputs ({alias: [size, ...]}), and its answer once its batch has run."""

  def __init__(self, inputs: dict[str, np.ndarray], size: int, run: Callable):
    self.inputs, self.size, self.run = inputs, size, run
    self.outputs: dict[str, np.ndarray] | None = None
    self.error: SignatureError | None = None
    self.done = threading.Event()


class _Queue:
  """One key's batches, oldest first; the last is open while `open_since` is set."""

  def __init__(self):
    self.batches: collections.deque[list[_Task]] = collections.deque()
    self.open_since: float | None = None   # when the open batch's first request came

  @staticmethod
  def size(batch: list[_Task]) -> int:
    return sum(task.size for task in batch)


class BatchScheduler:
  """Queues, merges and runs requests in batches (the module docstring has the rules)."""

  def __init__(self, params: BatchingParameters, clock: Callable[[], float] = time.monotonic):
    self.params = params
    self._clock = clock
    self._cond = threading.Condition()
    self._queues: dict[Hashable, _Queue] = {}
    self._turn = 0                 # round-robin: the queue a free thread looks at first
    self._stopped = False
    self.stats = {"batches": 0, "requests": 0, "rows": 0, "padding_rows": 0,
                  "batch_sizes": collections.Counter()}
    self._threads = [threading.Thread(target=self._work, name=f"{params.thread_pool_name}_{i}",
                                      daemon=True) for i in range(params.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def submit(self, key: Hashable, run: Callable[[dict], dict],
             inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Queues one request under `key` and waits for its slice of its batch's outputs. The batch
    is run by its first request's `run`, called with the merged inputs (requests of one key have
    equivalent ones). Raises SignatureError with TF Serving's code."""
    size = batch_size(inputs)
    limit = self.params.max_batch_size
    if size > limit:
      raise SignatureError("INVALID_ARGUMENT", f"Task size {size} is larger than maximum input "
                           f"batch size {limit}. Fix: send at most {limit} histories a request.")
    task = _Task(inputs, size, run)
    with self._cond:
      if self._stopped:
        raise SignatureError("UNAVAILABLE", "the batch scheduler has stopped")
      queue = self._queues.setdefault(key, _Queue())
      batches = queue.batches
      if queue.open_since is not None and queue.size(batches[-1]) + size <= limit:
        batches[-1].append(task)
      else:
        if len(batches) >= self.params.max_enqueued_batches:
          raise SignatureError(
              "UNAVAILABLE", f"The batch scheduling queue to which this task was submitted is "
              f"full; currently {len(batches)} batches enqueued and max_enqueued_batches is "
              f"{self.params.max_enqueued_batches}. Fix: retry later, or raise "
              "max_enqueued_batches in the batching parameters file.")
        batches.append([task])     # closes the open batch, if any: it can run now
        queue.open_since = self._clock()
      self._cond.notify_all()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def stop(self) -> None:
    """Lets the threads finish the batches already queued, then ends them."""
    with self._cond:
      self._stopped = True
      self._cond.notify_all()
    for thread in self._threads:
      thread.join()

  def _work(self) -> None:
    while True:
      with self._cond:
        while True:
          found = self._next_batch()
          if found is not None:
            break
          if self._stopped and not any(q.batches for q in self._queues.values()):
            return
          self._cond.wait(timeout=self._wait())
      self._process(found)

  def _next_batch(self) -> list[_Task] | None:
    """Under the lock: the next batch that may run, round-robin over the queues, or None."""
    queues = list(self._queues.items())
    now = self._clock()
    for offset in range(len(queues)):
      key, queue = queues[(self._turn + offset) % len(queues)]
      if not queue.batches:
        continue
      first = queue.batches[0]
      is_open = queue.open_since is not None and len(queue.batches) == 1
      ready = (not is_open or self._stopped
               or queue.size(first) >= self.params.max_batch_size
               or now >= queue.open_since + self.params.batch_timeout_micros / 1e6)
      if ready:
        queue.batches.popleft()
        if is_open:
          queue.open_since = None
        if queue.batches:
          self._turn = (self._turn + offset + 1) % len(queues)
        else:                     # idle: a retired version's queues do not pile up
          del self._queues[key]   # the next queue moves into its place
          self._turn = (self._turn + offset) % max(1, len(queues) - 1)
        return first
    return None

  def _wait(self) -> float:
    """Under the lock: seconds until the first open batch times out (at most 0.05)."""
    now, wait = self._clock(), 0.05
    for queue in self._queues.values():
      if queue.open_since is not None:
        wait = min(wait, queue.open_since + self.params.batch_timeout_micros / 1e6 - now)
    return max(wait, 0.0005)

  def _process(self, batch: list[_Task]) -> None:
    """Merges, runs and splits one batch; every request gets its answer or the batch's error."""
    padding = 0
    try:
      merged, padding = merge([task.inputs for task in batch], self.params)
      outputs = batch[0].run(merged)
      for task, part in zip(batch, split(outputs, [task.size for task in batch], padding)):
        task.outputs = part
    except SignatureError as e:
      for task in batch:
        task.error = e
    except Exception as e:  # noqa: BLE001  (every request is answered; the server goes on)
      logging.exception("a batch failed")
      for task in batch:
        task.error = SignatureError("INTERNAL", f"{type(e).__name__}: {e}")
    finally:
      rows = sum(task.size for task in batch)
      with self._cond:
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["rows"] += rows
        self.stats["padding_rows"] += padding
        self.stats["batch_sizes"][len(batch)] += 1
      for task in batch:
        task.done.set()


def batch_size(inputs: dict[str, np.ndarray]) -> int:
  """The request's rows: every input's dimension 0, which must agree (TF Serving's
  ComputeTensorBatchSize). INVALID_ARGUMENT otherwise."""
  if not inputs:
    raise SignatureError("INVALID_ARGUMENT", "Batching Run() must have at least one input tensor")
  sizes = set()
  for alias, value in inputs.items():
    if np.ndim(value) == 0:
      raise SignatureError("INVALID_ARGUMENT", f"Batching Run() input tensors must have at least "
                           f"one dimension; '{alias}' is a scalar. Fix: send it with shape [1] or "
                           "one value per history.")
    sizes.add(np.shape(value)[0])
  if len(sizes) > 1:
    shown = ", ".join(f"'{a}' {np.shape(v)[0]}" for a, v in sorted(inputs.items()))
    raise SignatureError("INVALID_ARGUMENT", f"Batching Run() input tensors must have equal "
                         f"0th-dimension size ({shown}). Fix: with batching on, send k, threshold "
                         "and max_blocks with one value per history (serving.client does).")
  return sizes.pop()


def merge(requests: list[dict[str, np.ndarray]], params: BatchingParameters
          ) -> tuple[dict[str, np.ndarray], int]:
  """The requests' inputs concatenated along dimension 0, then padded up to the next allowed
  batch size; returns (merged, padding rows). FAILED_PRECONDITION (or INTERNAL for dtypes, as
  TF Serving's concat) when they cannot be merged."""
  total = sum(batch_size(r) for r in requests)
  allowed = [b for b in params.allowed_batch_sizes if b >= total]
  padding = allowed[0] - total if allowed else 0
  merged = {}
  for alias in requests[0]:
    tensors = [np.asarray(r[alias]) for r in requests]
    if len({t.dtype for t in tensors}) > 1:
      raise SignatureError("INTERNAL", "Tensor concat operation failed: INVALID_ARGUMENT: Cannot "
                           f"concatenate tensors that have different data types ('{alias}': "
                           f"{sorted({str(t.dtype) for t in tensors})}).")
    if len({t.shape[1:] for t in tensors}) > 1:
      tensors = _padded(alias, tensors, params.pad_variable_length_inputs)
    if padding:
      tensors.append(np.repeat(tensors[-1][:1], padding, axis=0))
    merged[alias] = np.concatenate(tensors, axis=0)
  return merged, padding


def split(outputs: dict[str, np.ndarray], sizes: list[int], padding: int
          ) -> list[dict[str, np.ndarray]]:
  """The batch's outputs cut back into each request's rows (the padding rows dropped)."""
  total = sum(sizes) + padding
  ends = np.cumsum(sizes)
  parts: list[dict[str, np.ndarray]] = [{} for _ in sizes]
  for alias, value in outputs.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise SignatureError("FAILED_PRECONDITION",
                           f"Batched output tensor has 0 dimensions ('{alias}')")
    if value.shape[0] != total:
      raise SignatureError("FAILED_PRECONDITION", f"Batched output tensor's 0th dimension does "
                           f"not equal the sum of the 0th dimension sizes of the input tensors "
                           f"('{alias}': {value.shape[0]}, expected {total})")
    for part, start, end in zip(parts, ends - sizes, ends):
      part[alias] = value[start:end]
  return parts


def _padded(alias: str, tensors: list[np.ndarray], pad: bool) -> list[np.ndarray]:
  """Tensors of one alias whose dimensions after the first differ, padded at the end of each
  dimension with each tensor's own first element (pad_variable_length_inputs)."""
  if not pad or len({t.ndim for t in tensors}) > 1:
    raise SignatureError(
        "FAILED_PRECONDITION", f"Tensors with name '{alias}' from different tasks have different "
        "shapes and padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
        "all tensors with the same name have equal dimensions starting with the first dim. Fix: "
        "send histories left-padded with \"\" to the model's window (serving.client does).")
  if not 1 <= tensors[0].ndim <= MAX_PAD_RANK:
    raise SignatureError("FAILED_PRECONDITION", "Only tensors with rank from 1 to 6 can be padded.")
  target = tuple(max(t.shape[d] for t in tensors) for d in range(1, tensors[0].ndim))
  out = []
  for t in tensors:
    widths = [(0, 0)] + [(0, want - have) for want, have in zip(target, t.shape[1:])]
    if t.size == 0 and any(w for _, w in widths):
      raise SignatureError("FAILED_PRECONDITION", "Got empty tensor in batch of non-empty tensors.")
    out.append(np.pad(t, widths, mode="constant", constant_values=t.flat[0]) if t.size else t)
  return out
