"""The local PredictionService server over real gRPC on loopback, with tensorflow-serving-api's
standard client: raw ids round trip, the in-memory model's top-k, TF Serving's status codes,
new versions picked up while serving, REST, and the client's command line."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from conftest import export_tiny_skiprec, histories
from serving.client import SkipRecClient
from serving.model_store import ModelStore
from serving.server import LocalServer
from tf_skiprec.export.exporter import export_model

ITEMS, BLOCKS, MAX_LEN, K = 40, 6, 12, 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("models"))
  model, id_map = export_tiny_skiprec(base, 11, ITEMS, BLOCKS, MAX_LEN, K)
  store = ModelStore("skiprec", os.path.join(base, "skiprec"), poll_seconds=0.2)
  server = LocalServer({"skiprec": store}, rest_api_port=0).start()
  client = SkipRecClient(server.address, "skiprec")
  yield model, id_map, base, server, client
  client.close()
  server.stop()


def _in_memory_top_k(model, id_map, dense, k=K):
  dense = tf.constant(dense, tf.int32)
  scores = model.score(dense, block_mask=model.decisions(dense, 0.5)).numpy()[:, 1:]
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1
  return [list(id_map.decode(row)) for row in top], np.take_along_axis(scores, top - 1, axis=1)


def _raw(id_map, dense):
  return [[str(r) for r in id_map.decode(row[row > 0])] for row in dense]


def test_raw_ids_round_trip_with_the_in_memory_models_top_k(served):
  model, id_map, _, _, client = served
  dense = histories(ITEMS, 6, MAX_LEN, seed=5)
  dense[2, -1] = 4  # raw id "élan": UTF-8 both ways
  rec = client.recommend(_raw(id_map, dense), k=K)
  expected_ids, expected_scores = _in_memory_top_k(model, id_map, dense)
  assert rec.item_ids == expected_ids
  np.testing.assert_allclose(rec.scores, expected_scores, atol=1e-4)
  keep = model.decisions(tf.constant(dense), 0.5).numpy()
  assert rec.blocks_executed == keep.sum(axis=1).astype(int).tolist()
  assert 0 < sum(rec.blocks_executed) < 6 * BLOCKS                       # mixed decisions
  assert rec.history_length == (dense > 0).sum(axis=1).tolist() and rec.version == 1
  full = client.recommend(_raw(id_map, dense), k=K, full=True)
  assert full.blocks_executed == [BLOCKS] * 6
  scores = model.score(tf.constant(dense), block_mask=tf.ones([6, BLOCKS])).numpy()[:, 1:]
  np.testing.assert_allclose(full.scores, -np.sort(-scores, axis=1)[:, :K], atol=1e-4)


def test_unknown_ids_are_padding_and_counted(served):
  model, id_map, _, _, client = served
  dense = histories(ITEMS, 3, MAX_LEN, seed=2)
  clean = _raw(id_map, dense)
  noisy = [row[:1] + ["no-such-item", "99999"] + row[1:] for row in clean]
  a, b = client.recommend(clean), client.recommend(noisy)
  assert b.unknown_items == [2, 2, 2] and a.unknown_items == [0, 0, 0]
  assert b.item_ids == a.item_ids and b.history_length == a.history_length


def test_a_history_longer_than_max_len_is_cut_to_its_last_max_len_items(served):
  model, id_map, _, _, client = served
  long = [f"item{i % ITEMS}" for i in range(3 * MAX_LEN + 1)]
  tail = long[-MAX_LEN:]
  inputs = {"history": np.array([[s.encode() for s in long]], dtype=object)}  # unpadded, long
  out, _ = client.predict(inputs)
  assert out["history_length"].tolist() == [MAX_LEN]
  assert out["item_ids"].tolist() == [[s.encode() for s in client.recommend([tail]).item_ids[0]]]
  used = client.decisions([long])["used_history"][0]
  assert [u.decode() for u in used] == tail


def test_per_request_k_and_threshold(served):
  model, id_map, _, _, client = served
  rows = _raw(id_map, histories(ITEMS, 4, MAX_LEN, seed=9))
  rec = client.recommend(rows, k=[1, 2, 3, 4])
  assert [len(r) for r in rec.item_ids] == [1, 2, 3, 4]
  low = client.recommend(rows, threshold=0.0)      # P(keep) >= 0: every block
  high = client.recommend(rows, threshold=1.0)     # only certain blocks
  assert low.blocks_executed == [BLOCKS] * 4
  assert sum(high.blocks_executed) < sum(client.recommend(rows).blocks_executed)
  capped = client.recommend(rows, threshold=0.0, max_blocks=[1, 2, 3, 4])   # exactly m each
  assert capped.blocks_executed == [1, 2, 3, 4]
  shed = client.recommend(rows, max_blocks=1)        # the trained threshold, at most 1 block
  assert shed.blocks_executed == [min(1, b) for b in client.recommend(rows).blocks_executed]
  keep = client.decisions(rows, threshold=0.0, max_blocks=2)["keep"]
  assert keep.sum(axis=1).tolist() == [2] * 4


def _stub(server):
  return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))


def _request(model="skiprec", signature="", version=None, **inputs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  for alias, value in inputs.items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
  return request


@pytest.mark.parametrize("kwargs, code, message", [
    (dict(k=np.array([3], np.int32)), "INVALID_ARGUMENT", "history(feed name"),      # missing
    (dict(history=np.array([[1, 2]], np.int64)), "INVALID_ARGUMENT", "expects string"),
    (dict(history=np.array([b"1", b"2"], dtype=object)), "INVALID_ARGUMENT", "expects rank 2"),
    (dict(history=np.array([[b"1"]], dtype=object), k=np.array([2.5], np.float32)),
     "INVALID_ARGUMENT", "'k': expects int32"),
    (dict(history=np.array([[b"1"]], dtype=object), k=np.array([0], np.int32)),
     "INVALID_ARGUMENT", "k must be at least 1"),
    (dict(history=np.array([[b"1"]] * 3, dtype=object), k=np.array([1, 2], np.int32)),
     "INVALID_ARGUMENT", "k must have 1 value or one per history row"),
    (dict(history=np.array([[b"1"]], dtype=object), max_blocks=np.array([-1], np.int32)),
     "INVALID_ARGUMENT", "max_blocks must be at least 0"),
    (dict(history=np.array([[b"1"]] * 3, dtype=object), max_blocks=np.array([1, 2], np.int32)),
     "INVALID_ARGUMENT", "max_blocks must have 1 value or one per history row"),
    (dict(model="nope", history=np.array([[b"1"]], dtype=object)), "NOT_FOUND",
     "Servable not found for request: Latest(nope)"),
    (dict(version=99, history=np.array([[b"1"]], dtype=object)), "NOT_FOUND",
     "Specific(skiprec, 99)"),
    # TF Serving answers an unknown signature with FAILED_PRECONDITION (predict_util.cc).
    (dict(signature="nope", history=np.array([[b"1"]], dtype=object)), "FAILED_PRECONDITION",
     'Serving signature key "nope" not found'),
])
def test_errors_get_tf_servings_status_and_the_server_keeps_serving(served, kwargs, code, message):
  _, id_map, _, server, client = served
  stub = _stub(server)
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(_request(**kwargs), timeout=10)
  assert error.value.code() == getattr(grpc.StatusCode, code)
  assert message in error.value.details()
  assert len(client.recommend([["item1", "item2"]]).item_ids[0]) == K  # still answering


def test_a_new_version_is_picked_up_while_serving_and_a_broken_one_refused(served):
  model, id_map, base, server, client = served
  model_dir = os.path.join(base, "skiprec")
  assert client.recommend([["item1"]]).version == 1
  model.backbone.blocks[0].alpha.assign(-2.0)  # a different model
  try:
    export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec", max_len=MAX_LEN,
                 sample_histories=histories(ITEMS, 4, MAX_LEN), top_k=K)
  finally:
    model.backbone.blocks[0].alpha.assign(0.7)
  os.makedirs(os.path.join(model_dir, "3", "variables"))  # a broken "version 3"
  with open(os.path.join(model_dir, "3", "saved_model.pb"), "wb") as f:
    f.write(b"not a SavedModel")
  status = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
  deadline = time.time() + 60
  while client.recommend([["item1"]]).version != 2:
    assert time.time() < deadline, "version 2 was not picked up"
    time.sleep(0.2)
  v1 = SkipRecClient(server.address, "skiprec", version=1).recommend([["item1"]])
  assert v1.version == 1  # the old version still answers when asked for
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = "skiprec"
  while len(status.GetModelStatus(request, timeout=10).model_version_status) < 3:
    assert time.time() < deadline
    time.sleep(0.2)
  states = {s.version: (s.state, s.status.error_message)
            for s in status.GetModelStatus(request, timeout=10).model_version_status}
  assert states[1][0] == states[2][0] == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  assert states[3][0] == get_model_status_pb2.ModelVersionStatus.END and "could not load" in \
      states[3][1]
  assert client.recommend([["item1"]]).version == 2
  shutil.rmtree(os.path.join(model_dir, "3"))


def test_rest_predict_status_and_errors(served):
  _, id_map, _, server, client = served
  url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/skiprec"
  body = {"instances": [{"history": ["item1", "item2", ""], "k": 3},
                        {"history": ["item5", "item6", "item7"], "k": 3}]}
  answer = _post(url + ":predict", body)
  grpc_answer = client.recommend([["item1", "item2"], ["item5", "item6", "item7"]], k=3)
  assert [p["item_ids"] for p in answer["predictions"]] == grpc_answer.item_ids
  columnar = _post(url + ":predict", {"inputs": {"history": [["item1", "item2"]]}})
  assert columnar["outputs"]["item_ids"][0] == client.recommend([["item1", "item2"]]).item_ids[0]
  with urllib.request.urlopen(url) as response:
    states = {s["version"]: s["state"] for s in json.load(response)["model_version_status"]}
  assert states["1"] == "AVAILABLE"
  for bad, code in (({"instances": [{"history": [1, 2]}]}, 400),
                    ({"instances": [{"history": ["a"]}, {"history": ["a", "b"]}]}, 400),
                    ({"instances": [["a"]], "signature_name": "nope"}, 400)):
    with pytest.raises(urllib.error.HTTPError) as error:
      _post(url + ":predict", bad)
    assert error.value.code == code and "error" in json.load(error.value)
  with pytest.raises(urllib.error.HTTPError) as error:
    _post(url.replace("skiprec", "nope") + ":predict", body)
  assert error.value.code == 404
  from serving.grpc_service import MAX_ELEMENTS
  with pytest.raises(urllib.error.HTTPError) as error:  # 16 MB of JSON, under the body limit
    _post(url + ":predict", {"inputs": {"history": [[""] * (MAX_ELEMENTS + 1)]}})
  assert error.value.code == 400 and "more than the" in json.load(error.value)["error"]


def test_client_command_line(served):
  _, _, _, server, _ = served
  out = subprocess.run([sys.executable, "-m", "serving.client", f"--server={server.address}",
                        "--model=skiprec", "--history=item1,item2,no-such-item", "--k=3"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "1 unknown" in out.stdout and len([l for l in out.stdout.splitlines()
                                            if l.strip().startswith(("1 ", "2 ", "3 "))]) == 3
  bad = subprocess.run([sys.executable, "-m", "serving.client", f"--server={server.address}",
                        "--model=nope", "--history=item1"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
  assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr


def _post(url, body):
  request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.load(response)


def test_one_short_value_cannot_make_the_server_build_a_large_tensor(served):
  """The compact "one value for all" form is for numeric vectors (k, threshold) of at most a
  batch: a 100-byte id broadcast to [4096, 1024] would be ~400 MB from a ~150-byte request."""
  _, _, _, server, client = served
  request = _request(k=np.array([3], np.int32))
  history = request.inputs["history"]
  history.dtype = tf.string.as_datatype_enum
  history.tensor_shape.dim.add(size=4096)
  history.tensor_shape.dim.add(size=1024)
  history.string_val.append(b"x" * 100)
  with pytest.raises(grpc.RpcError) as error:
    _stub(server).Predict(request, timeout=10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "'history'" in error.value.details() and "one for all only for numbers" in (
      error.value.details())
  broadcast_k = _request(history=np.array([[b""] * 11 + [b"item1"]] * 3, dtype=object))
  k = broadcast_k.inputs["k"]  # k [3] sent as one value: still fine
  k.dtype = tf.int32.as_datatype_enum
  k.tensor_shape.dim.add(size=3)
  k.int_val.append(2)
  out = _stub(server).Predict(broadcast_k, timeout=10)
  assert tf.make_ndarray(out.outputs["item_ids"]).shape == (3, 2)
  assert len(client.recommend([["item1", "item2"]]).item_ids[0]) == K


def test_a_request_is_validated_once(served, monkeypatch):
  """gRPC and REST: the signature and the aliases are checked once (the runner's prepare), each
  tensor's dtype once (the runner's Request.run); the servers parse and check nothing more."""
  from tf_skiprec.export import runner as runner_lib
  _, id_map, _, server, client = served
  calls = {"prepare": 0, "dtype": []}
  prepare, check_dtype = runner_lib.SavedModelRunner.prepare, runner_lib._check_dtype

  def counted_prepare(self, *args):
    calls["prepare"] += 1
    return prepare(self, *args)

  def counted_dtype(alias, info, value):
    calls["dtype"].append(alias)
    return check_dtype(alias, info, value)

  monkeypatch.setattr(runner_lib.SavedModelRunner, "prepare", counted_prepare)
  monkeypatch.setattr(runner_lib, "_check_dtype", counted_dtype)
  history = _raw(id_map, histories(ITEMS, 2, MAX_LEN, seed=4))
  client.recommend(history, k=[3, 4], threshold=0.6)
  assert calls["prepare"] == 1 and sorted(calls["dtype"]) == ["history", "k", "threshold"]
  calls.update(prepare=0, dtype=[])
  padded = [x.decode("utf-8") for x in client.pad(history)[0]]
  body = json.dumps({"instances": [{"history": padded, "k": 3}]}).encode()
  request = urllib.request.Request(f"http://localhost:{server.rest_api_port}/v1/models/"
                                   "skiprec:predict", data=body, method="POST")
  with urllib.request.urlopen(request, timeout=30) as response:
    assert response.status == 200
  assert calls["prepare"] == 1 and sorted(calls["dtype"]) == ["history", "k"]
  with pytest.raises(grpc.RpcError) as e:                       # the one check still refuses
    client.predict({"history": client.pad(history), "k": np.float32([3.0, 4.0])})
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "input 'k': expects int32 but float32 is provided" in e.value.details()
