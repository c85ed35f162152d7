"""The local server with TF Serving's server-side batching (--enable_batching), over real gRPC on
loopback: concurrent requests are merged (the scheduler's counters show it), each gets exactly
the answer it gets alone, a full queue answers UNAVAILABLE while the server goes on, and a
version retired under load answers the requests it holds."""

import os
import shutil
import threading
import weakref
import time

import grpc
import numpy as np
import pytest

from conftest import export_tiny_skiprec, histories
from serving.batching_parameters import BatchingParameters
from serving.client import SkipRecClient
from serving.model_store import AVAILABLE, END, UNLOADING, ModelStore, VersionPolicy
from serving.server import LocalServer

ITEMS, BLOCKS, MAX_LEN, K = 40, 6, 12, 5
# The RPC deadline of a test that holds a request on purpose: the client's default (10 s) is for
# answers, and a held request waits out a model load, which takes longer on a loaded machine.
HELD = 120.0


@pytest.fixture(scope="module")
def export_base(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("models"))
  _, id_map = export_tiny_skiprec(base, 13, ITEMS, BLOCKS, MAX_LEN, K)
  raw = [[str(i) for i in id_map.decode(row[row > 0])]
         for row in histories(ITEMS, 16, MAX_LEN, seed=3)]
  return base, raw


def _server(base, batching=None, workers=16):
  store = ModelStore("skiprec", os.path.join(base, "skiprec"), poll_seconds=0.2)
  return LocalServer({"skiprec": store}, batching=batching, workers=workers).start()


def _hold_first_run(monkeypatch, runner=None) -> tuple[threading.Event, threading.Event]:
  """Makes the next Session run (of `runner`, or of any runner) wait until `release` is set;
  `running` is set when it starts waiting. Returns (running, release)."""
  from tf_skiprec.export.runner import SavedModelRunner
  running, release = threading.Event(), threading.Event()
  real = SavedModelRunner._session_run              # noqa: SLF001

  def held(self, *args):
    if (runner is None or self is runner) and not running.is_set():
      running.set()
      release.wait(timeout=HELD)
    return real(self, *args)
  monkeypatch.setattr(SavedModelRunner, "_session_run", held)
  return running, release


def test_sixteen_concurrent_requests_are_batched_and_each_gets_its_answer_alone(export_base):
  base, raw = export_base
  alone = _server(base)
  client = SkipRecClient(alone.address, "skiprec")
  ks = [1 + i % K for i in range(16)]
  thresholds = [0.1 + 0.05 * i for i in range(16)]
  expected = [client.recommend([raw[i]], k=ks[i], threshold=thresholds[i]) for i in range(16)]
  client.close()
  alone.stop()
  params = BatchingParameters(max_batch_size=16, batch_timeout_micros=2_000_000,
                              num_batch_threads=2, allowed_batch_sizes=(4, 8, 16))
  server = _server(base, params, workers=32)
  clients = [SkipRecClient(server.address, "skiprec") for _ in range(16)]
  got = [None] * 16
  barrier = threading.Barrier(16)

  def one(i):
    barrier.wait()
    got[i] = clients[i].recommend([raw[i]], k=ks[i], threshold=thresholds[i])
  threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  stats = server.models.batching.stats
  for c in clients:
    c.close()
  server.stop()
  assert stats["requests"] == 16 and stats["batches"] < 16, stats          # batches formed
  assert max(stats["batch_sizes"]) > 1
  for i in range(16):
    assert got[i].item_ids == expected[i].item_ids, i
    np.testing.assert_allclose(got[i].scores, expected[i].scores, atol=1e-5)
    assert got[i].blocks_executed == expected[i].blocks_executed


def test_a_full_queue_answers_unavailable_and_the_server_goes_on(export_base, monkeypatch):
  base, raw = export_base
  params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
  server = _server(base, params)
  client = SkipRecClient(server.address, "skiprec", timeout=HELD)
  client.recommend([raw[0]])                         # loaded and warm
  running, release = _hold_first_run(monkeypatch)    # the first batch holds the only thread
  answers = {}
  first = threading.Thread(target=lambda: answers.setdefault("a", client.recommend([raw[1]])))
  first.start()
  assert running.wait(timeout=30)
  second = threading.Thread(target=lambda: answers.setdefault("b", client.recommend([raw[2]])))
  second.start()                                     # waits as the open batch: the queue is full
  scheduler = server.models.batching
  deadline = time.monotonic() + 30
  while time.monotonic() < deadline:
    with scheduler._cond:                            # noqa: SLF001
      if any(q.batches for q in scheduler._queues.values()):  # noqa: SLF001
        break
    time.sleep(0.01)
  with pytest.raises(grpc.RpcError) as e:
    client.recommend([raw[3]])
  assert e.value.code() == grpc.StatusCode.UNAVAILABLE
  assert "queue to which this task was submitted is full" in e.value.details()
  release.set()
  first.join(timeout=30)
  second.join(timeout=30)
  monkeypatch.undo()
  assert set(answers) == {"a", "b"}
  assert len(client.recommend([raw[4]]).item_ids[0]) == K   # the server goes on answering
  client.close()
  server.stop()


def test_a_version_retired_while_its_request_waits_in_a_batch_still_answers_it(export_base,
                                                                                tmp_path,
                                                                                monkeypatch):
  """TF Serving's ServableHandle: the version policy retires version 1 while a request to it is
  being run in a batch; the unload waits for that request, which gets version 1's answer."""
  base, raw = export_base
  model_dir = str(tmp_path / "skiprec")
  shutil.copytree(os.path.join(base, "skiprec", "1"), os.path.join(model_dir, "1"))
  store = ModelStore("skiprec", model_dir, VersionPolicy("latest"), poll_seconds=0.2)
  params = BatchingParameters(max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=2)
  server = LocalServer({"skiprec": store}, batching=params).start()
  client = SkipRecClient(server.address, "skiprec", timeout=HELD)  # held across a model load
  expected = client.recommend([raw[0]])
  assert expected.version == 1
  v1 = store.runner(1)[1]
  running, release = _hold_first_run(monkeypatch, v1)  # version 1's next run waits
  answer = {}
  waiting = threading.Thread(target=lambda: answer.setdefault("v1", client.recommend([raw[0]])))
  waiting.start()
  assert running.wait(timeout=30)
  shutil.copytree(os.path.join(model_dir, "1"), os.path.join(model_dir, "2"))
  deadline = time.monotonic() + 60
  while {v.number: v.state for v in store.status()} != {1: UNLOADING, 2: AVAILABLE}:
    assert time.monotonic() < deadline, store.status()
    time.sleep(0.05)
  assert client.recommend([raw[1]]).version == 2     # the swap went on meanwhile
  release.set()
  waiting.join(timeout=60)
  assert answer["v1"].version == 1 and answer["v1"].item_ids == expected.item_ids
  while store.status(1)[0].state != END:             # and version 1 is then unloaded
    assert time.monotonic() < deadline
    time.sleep(0.05)
  client.close()
  server.stop()


def test_a_retired_versions_graph_is_freed_when_it_is_unloaded(export_base, tmp_path):
  """Its tf.Graph sits in reference cycles; the store collects them on unload, as TF Serving
  frees a version, rather than at Python's next full collection (the soak's RSS climbed)."""
  base, _ = export_base
  model_dir = str(tmp_path / "skiprec")
  shutil.copytree(os.path.join(base, "skiprec", "1"), os.path.join(model_dir, "1"))
  store = ModelStore("skiprec", model_dir, VersionPolicy("latest"))
  store.poll()
  graph = weakref.ref(store.runner(1)[1].graph)
  shutil.copytree(os.path.join(model_dir, "1"), os.path.join(model_dir, "2"))
  store.poll()
  assert [(v.number, v.state) for v in store.status()] == [(2, AVAILABLE), (1, END)]
  assert graph() is None
  store.stop()
