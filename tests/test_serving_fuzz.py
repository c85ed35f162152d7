r"""Hostile input: hypothesis-made Predict requests over real gRPC on loopback and REST
requests over HTTP, each with its oracle (tests/serving_oracles.py) worked out from the request
alone (the status TF Serving's rules give it, with serving/grpc_service.py's stricter parsing;
names one of which its message holds, with a fix; if valid, the in-memory model's answer); after
every one the known-good request keeps its reference answer; every call has a deadline. Then
corrupt and partial versions.

  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 \
    .venv/bin/python -m pytest -q tests/test_serving_fuzz.py  # ~30 s on 2 cores; prints the counts
"""

import base64
import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import time
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2 as dt
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from conftest import histories, tiny_skiprec
from serving.model_store import ModelStore, VersionPolicy
from serving.server import LocalServer
from serving_oracles import INPUTS, ITEMS, OUTPUTS, SIGNATURES, grpc_oracle, rest_oracle
from tf_skiprec import policy as policy_lib
from tf_skiprec.export.exporter import export_model

BLOCKS, MAX_LEN, K = 6, 12, 5
DEADLINE = 30.0                       # s, on every call (a hang fails)
N_GRPC, N_REST = 250, 150             # examples; the whole file runs in ~30 s on 2 cores
FUZZ = settings(deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))  # no shrinking: minutes of server calls
KNOWN = [b"item1", b"item2", b"item7", "élan".encode(), b"item39"]
GARBAGE = [b"\xff\xfe\xfd", b"no-such-item", b"99999", b"item40", b"ITEM1", b"item1 ", b"\x00"]
COUNTS = collections.Counter()        # of the real run, printed when the module ends
Served = type("Served", (types.SimpleNamespace,), {"__repr__": object.__repr__})  # printed short


@pytest.fixture(scope="module")
def served(tmp_path_factory, request):
  """One server: "skiprec" (fuzzed) and "skiprec_latest" (version 1 again, policy "latest")."""
  tf.keras.utils.set_random_seed(11)
  model, id_map = tiny_skiprec(ITEMS, BLOCKS, MAX_LEN)
  base = str(tmp_path_factory.mktemp("models"))
  export_model(model, id_map, threshold=0.5, base_dir=base, model_name="skiprec", max_len=MAX_LEN,
               sample_histories=histories(ITEMS, 8, MAX_LEN), top_k=K)
  latest = os.path.join(base, "skiprec_latest")
  shutil.copytree(os.path.join(base, "skiprec", "1"), os.path.join(latest, "1"))
  server = LocalServer({"skiprec": ModelStore("skiprec", os.path.join(base, "skiprec")),
                        "skiprec_latest": ModelStore("skiprec_latest", latest,
                                                     VersionPolicy("latest"), poll_seconds=0.1)},
                       rest_api_port=0).start()
  channel = grpc.insecure_channel(server.address)
  raw = [str(r).encode("utf-8") for r in id_map.decode(np.arange(1, ITEMS + 1))]
  dense = histories(ITEMS, 4, MAX_LEN, seed=3)
  scores = model.score(tf.constant(dense), block_mask=tf.cast(
      model.decisions(tf.constant(dense), 0.5), tf.float32)).numpy()[:, 1:]
  top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
  yield Served(
      model=model, raw=raw, catalogue={r: i + 1 for i, r in enumerate(raw)}, latest=latest,
      threshold=0.5, port=server.rest_api_port,
      predict=prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict,
      status=model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus,
      good=np.array([[raw[d - 1] if d else b"" for d in row] for row in dense], dtype=object),
      reference=([[raw[i] for i in row] for row in top], np.take_along_axis(scores, top, 1)))
  channel.close()
  server.stop()
  by = {api: ", ".join(f"{key[5:]} {n}" for key, n in sorted(COUNTS.items())
                       if key.startswith(api + " ")) for api in ("gRPC", "REST")}
  with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
    print("\nfuzzed inputs tried: " + "; ".join(f"{a} {COUNTS[a]} ({by[a]})" for a in by))


def still_serving(ns, model="skiprec", rest=False) -> int:
  """The known-good request gets the reference answer; returns the version that answered."""
  if rest:
    out = _http(ns, "POST", f"/v1/models/{model}:predict", json.dumps({"inputs": {"history": [
        [x.decode() for x in row] for row in ns.good]}}).encode())[1]["outputs"]
    ids, scores, version = [[x.encode() for x in r] for r in out["item_ids"]], out["scores"], 1
  else:
    response = ns.predict(predict_pb2.PredictRequest(model_spec={"name": model}, inputs={
        "history": tf.make_tensor_proto(ns.good)}), timeout=DEADLINE)
    ids, scores = [tf.make_ndarray(response.outputs[a]) for a in ("item_ids", "scores")]
    ids, version = ids.tolist(), response.model_spec.version.value
  assert ids == ns.reference[0]
  np.testing.assert_allclose(scores, ns.reference[1], atol=1e-4)
  return version


def check_answer(ns, signature: str, arrays: dict, out: dict, output_filter=()) -> None:
  """`out` {alias: array} is the in-memory model's answer to `arrays` (near the threshold: ids)."""
  batch = len(arrays["history"])
  dense, want = np.zeros([batch, MAX_LEN], np.int32), collections.defaultdict(list)
  for r, row in enumerate(arrays["history"]):                            # [L] bytes
    known = [ns.catalogue[x] for x in row if x in ns.catalogue][-MAX_LEN:]
    dense[r, MAX_LEN - len(known):] = known
    want["unknown_items"].append(sum(x != b"" and x not in ns.catalogue for x in row))
    want["history_length"].append(len(known))
  prob = policy_lib.keep_probability(ns.model.policy(tf.constant(dense), training=False)).numpy()
  t = np.broadcast_to(arrays.get("threshold", np.float32([ns.threshold])), [batch])[:, None]
  keep = prob >= t if signature != "full" else np.ones_like(prob, bool)  # [B, N]
  close = np.any(np.abs(prob - t) < 1e-5, axis=1) & (signature != "full")
  want.update(blocks_executed=keep.sum(axis=1), keep=keep.astype(np.int32),
              used_history=[[ns.raw[d - 1] if d else b"" for d in row] for row in dense])
  scores = ns.model.score(tf.constant(dense), block_mask=tf.constant(
      keep.astype(np.float32))).numpy()[:, 1:]                           # [B, V - 1]
  ks = np.broadcast_to(arrays.get("k", [K]), [batch])
  assert sorted(out) == sorted(set(output_filter or SIGNATURES[signature][1]))
  assert all(len(value) == batch for value in out.values())
  if "keep_probability" in out:
    np.testing.assert_allclose(out["keep_probability"], prob, atol=1e-5)
  for r, near in enumerate(close):
    for alias in set(out) & ({"unknown_items", "history_length", "used_history"} | (
        set() if near else {"blocks_executed", "keep"})):
      assert np.array_equal(out[alias][r], want[alias][r]), (alias, r)
    k, top = int(ks[r]), -np.sort(-scores[r])[:ks[r]]                    # [k]
    if "scores" in out and not near:
      assert out["scores"].shape[1] == max(ks) and not np.any(out["scores"][r][k:])
      np.testing.assert_allclose(out["scores"][r][:k], top, atol=1e-4)
    if "item_ids" in out:
      ids = list(out["item_ids"][r])
      assert all(x in ns.catalogue for x in ids[:k]) and all(x == b"" for x in ids[k:]), ids
      assert near or np.allclose(scores[r][[ns.catalogue[x] - 1 for x in ids[:k]]], top,
                                 atol=1e-4)  # each id scores what its rank asks (ties may swap)


def rarely(draw, n: int) -> bool:  # ~1 in n; not on 0, where hypothesis's simplest cases sit
  return draw(st.integers(0, n - 1)) == n // 2


ids = st.sampled_from(KNOWN * 2 + [b""] * 3 + GARBAGE) | st.binary(max_size=12)
texts = st.sampled_from(["", "nope", "History", "k ", "x" * 3000]) | st.text(max_size=12)
EDGES = {"k": st.sampled_from([0, -1, ITEMS, ITEMS + 1, 2**31 - 1, -2**31]),
         "threshold": st.floats(width=32) | st.sampled_from([np.inf, -np.inf, np.nan])}
DTYPES = [dt.DT_STRING, dt.DT_INT32, dt.DT_INT64, dt.DT_FLOAT, dt.DT_BOOL, dt.DT_DOUBLE,
          dt.DT_HALF, dt.DT_VARIANT, dt.DT_RESOURCE, dt.DT_QINT8, dt.DT_INVALID, 999]
SIZES = st.lists(st.sampled_from([-1, 0, 1, 2, 3, 12, 2**20, 2**31 - 1, 2**40, 2**62]), max_size=3)


@st.composite
def tensors(draw, alias: str, rows: int):
  """9 in 10 from an array (any shape, odd ids, edge values; 1 in 9 declaring another shape than
  it holds), else hand-made: any dtype, dimensions, values, tensor_content."""
  kind = draw(st.integers(0, 9))
  if kind < 9:
    if alias == "history":
      length = draw(st.integers(0, MAX_LEN) | st.integers(MAX_LEN + 1, 3 * MAX_LEN))
      shape = draw(st.sampled_from([[rows, length]] * 12 + [[], [length], [rows, length, 2]]))
      value = draw(st.sampled_from([ids, ids, st.just(b""), st.sampled_from(KNOWN)]))
    else:
      shape = draw(st.sampled_from([[1]] * 3 + [[rows]] * 3 + [[0], [2], [], [rows, 1]]))
      value = st.integers(1, ITEMS) if alias == "k" else st.floats(0, 1, width=32)
      value = value | EDGES[alias] if rarely(draw, 4) else value
    flat = draw(st.lists(value, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    if flat and alias == "history" and rarely(draw, 20):  # a very long id, now and then > 4 MiB
      flat[0] = b"z" * draw(st.sampled_from([1000, 100_000, 5_000_000]))
    proto = tf.make_tensor_proto(np.array(flat, INPUTS[alias][1]).reshape(shape))
    if kind == 8 and shape:  # the shape it declares is not the one it holds (or is, by chance)
      proto.tensor_shape.dim[0].size = draw(st.sampled_from([0, 1, 2, 5, 2**31 - 1, 2**40]))
    return proto
  proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from([INPUTS[alias][0]] * 4 + DTYPES)),
                                 tensor_shape={"dim": [{"size": n} for n in draw(SIZES)],
                                               "unknown_rank": rarely(draw, 10)})
  field, value = {dt.DT_STRING: ("string_val", ids), dt.DT_FLOAT: ("float_val", st.floats(
      width=32))}.get(proto.dtype, ("int_val", st.integers(-2**31, 2**31 - 1)))
  if draw(st.booleans()):
    proto.tensor_content = draw(st.binary(max_size=16))
  else:
    getattr(proto, field).extend(draw(st.lists(value, max_size=6)))
  return proto


@st.composite
def predict_requests(draw):
  """Mostly well-aimed; wrong names, versions, labels, signatures, filters, aliases now and then."""
  request = predict_pb2.PredictRequest()
  spec = request.model_spec
  spec.name = draw(texts) if rarely(draw, 20) else "skiprec"
  if rarely(draw, 30):
    spec.version.value = draw(st.sampled_from([1, 0, -1, 2, 2**62, -2**63, 2**63 - 1]))
  elif rarely(draw, 30):
    spec.version_label = draw(texts)
  if rarely(draw, 4):
    spec.signature_name = draw(texts) if rarely(draw, 4) else draw(st.sampled_from(
        list(SIGNATURES) * 3 + ["__saved_model_init_op", "Serving_Default"]))
  if rarely(draw, 6):
    request.output_filter.extend(draw(st.lists(st.sampled_from(
        OUTPUTS + SIGNATURES["decisions"][1] + ("nope",)), min_size=1, max_size=3)))
  rows = draw(st.sampled_from([1, 1, 2, 3, 4, 1, 2, 0]))
  aliases = [a for a, p in (("history", 19), ("k", 8), ("threshold", 6))
             if draw(st.integers(0, 19)) < p]
  aliases += draw(st.lists(texts, max_size=2)) if rarely(draw, 15) else []
  aliases += [f"extra{i}" for i in range(12)] if rarely(draw, 50) else []
  for alias in aliases:
    request.inputs[alias].CopyFrom(draw(tensors(alias if alias in INPUTS else "history", rows)))
  return request


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) |
    st.sampled_from([10**400, 2**62, "\ud800", "item1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["instances", "inputs", "history", "k", "threshold", "b64", "signature_name"]) |
        st.text(max_size=6), inner, max_size=4), max_leaves=12)
json_ids = (st.sampled_from([x.decode() for x in KNOWN] * 3 + ["", "no-such"]) |
            st.text(max_size=10) | ids.map(lambda b: {"b64": base64.b64encode(b).decode()}))
json_bad = st.sampled_from([{"b64": "!!not base64"}, {"b64": 5}, 7, None, ["item1"], "\ud800", 0,
                            2**31, 2**62, 10**30, -2**63, 3.0, True, "3", [3], 1e300, 10**400])


@st.composite
def rest_requests(draw):
  """(path, body, Content-Length or None): row or columnar bodies, 1 in 4 with a bad value (a
  wrong type, a huge k, bad base64, a lone surrogate, a list); any JSON or bytes; bad lengths."""
  path = "/v1/models/" + draw(st.sampled_from(["skiprec:predict"] * 30 + [
      "skiprec/versions/1:predict", "skiprec/versions/2:predict", "nope:predict",
      "skiprec/versions/" + "9" * 30 + ":predict", "skiprec/versions/x:predict", "skiprec:x"]))
  length = draw(st.sampled_from(["-1", "abc", "", "1000000000000"])) if rarely(draw, 12) else None
  kind = draw(st.integers(0, 9))
  if kind < 2:
    return path, draw(st.binary(max_size=40) | st.sampled_from(
        [b"[" * 5000 + b"]" * 5000, b'{"instances": ' + b"[" * 40 + b'"a"' + b"]" * 40 + b"}",
         b"\xff\xfe{}", b"null"]) if kind else json_values.map(
        lambda v: json.dumps(v).encode())), length
  rows, width = draw(st.sampled_from([1, 1, 2, 3, 4, 0])), draw(st.integers(0, 2 * MAX_LEN))
  history = draw(st.lists(st.lists(json_ids, min_size=width, max_size=width), min_size=rows,
                          max_size=rows))
  keys = [a for a, p in (("k", 8), ("threshold", 6), ("nope", 1)) if draw(st.integers(0, 19)) < p]
  values = {a: draw(st.lists({"k": st.integers(1, ITEMS), "threshold": st.floats(0, 1)}.get(
      a, st.just(1)), min_size=rows, max_size=rows)) for a in keys}
  where = draw(st.sampled_from(["history"] + keys[:2]))
  if rows and (width or where != "history") and rarely(draw, 4):  # one bad value
    column = history[draw(st.integers(0, rows - 1))] if where == "history" else values[where]
    column[draw(st.integers(0, len(column) - 1))] = draw(json_bad)
  size = draw(st.sampled_from([1, 1, rows]))
  body = ({"inputs": dict({"history": history}, **{a: values[a][:size] for a in keys})}
          if kind > 6 else {"instances": [dict({"history": h}, **{a: values[a][i] for a in keys})
                                          for i, h in enumerate(history)]}
          if keys or rarely(draw, 2) else {"instances": history})
  if rarely(draw, 6):
    body["signature_name"] = draw(st.sampled_from(
        ["", "serving_default", "full", "decisions", "nope", 5, None, ["x"], {"a": 1}]))
  return path, json.dumps(body).encode(), length


@settings(FUZZ, max_examples=N_GRPC)
@given(case=predict_requests())
def test_fuzzed_predict_requests_get_the_oracles_status_and_right_answers(served, case):
  status, names, arrays = grpc_oracle(case)
  try:
    response, got, message = served.predict(case, timeout=DEADLINE), "OK", ""
  except grpc.RpcError as e:
    got, message = e.code().name, e.details() or ""
  COUNTS.update(["gRPC", f"gRPC {got}"])
  assert got == status, (got, message)
  if got == "OK":
    assert response.model_spec.version.value == 1
    check_answer(served, case.model_spec.signature_name or "serving_default", arrays,
                 {a: tf.make_ndarray(p) for a, p in response.outputs.items()}, case.output_filter)
  elif names is not None:  # the field and the fix
    assert any(n in message for n in names) and re.search("Fix| must ", message), message
  still_serving(served)


@settings(FUZZ, max_examples=N_REST)
@given(case=rest_requests())
def test_fuzzed_rest_requests_get_a_4xx_with_an_error_or_the_right_answer(served, case):
  (status, names), signature, arrays = rest_oracle(*case)
  code, body = _http(served, "POST", *case)
  COUNTS.update(["REST", f"REST {code}"])
  assert code == status, body
  if code == 200:
    out = body.get("outputs") or {a: [p[a] for p in body["predictions"]]
                                  for a in body["predictions"][0]}
    check_answer(served, signature, arrays, {a: np.array(
        [[x.encode() for x in row] for row in v], dtype=object) if a in ("item_ids",
        "used_history") else np.array(v) for a, v in out.items()})
  else:  # the field and the fix
    assert any(n in body["error"] for n in names) and re.search("Fix| must ", body["error"]), body
  still_serving(served, rest=True)
  still_serving(served)


def test_a_corrupt_or_partial_new_version_is_refused_while_version_1_keeps_serving(served):
  """Under "latest", a newer version that fails to load leaves version 1 serving (TF Serving's
  availability-preserving policy); once its files are complete it is loaded and served."""
  root, end = served.latest, get_model_status_pb2.ModelVersionStatus.END

  def states():
    return {s.version: s for s in served.status(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "skiprec_latest"}), timeout=DEADLINE).model_version_status}

  def until(done, what, serving=1):
    deadline = time.time() + 60
    while not done():
      assert serving is None or still_serving(served, "skiprec_latest") == serving  # right
      assert time.time() < deadline, what                                         # meanwhile
      time.sleep(0.05)

  breakages = {2: lambda d: os.truncate(os.path.join(d, "saved_model.pb"), 5000),  # cut short
               3: lambda d: open(os.path.join(d, "saved_model.pb"), "wb").write(b"\x08junk" * 99),
               4: lambda d: shutil.rmtree(os.path.join(d, "variables")),
               5: lambda d: os.truncate(os.path.join(d, "variables",
                                                     "variables.data-00000-of-00001"), 100),
               6: lambda d: os.remove(os.path.join(d, "saved_model.pb"))}  # not written yet
  for version, breakage in breakages.items():
    shutil.copytree(os.path.join(root, "1"), os.path.join(root, ".staging"))
    breakage(os.path.join(root, ".staging"))
    os.rename(os.path.join(root, ".staging"), os.path.join(root, str(version)))
    until(lambda: version in states() and states()[version].state == end, f"{version} refused")
    refused = states()[version].status
    assert refused.error_code and "could not load" in refused.error_message
    assert states()[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  shutil.copy(os.path.join(root, "1", "saved_model.pb"), os.path.join(root, "6"))  # complete
  until(lambda: still_serving(served, "skiprec_latest") == 6, "6 not served", serving=None)
  until(lambda: states()[1].state == end, "1 not unloaded", serving=None)  # as "latest" asks
  assert not states()[1].status.error_message and {states()[v].state for v in range(2, 6)} == {end}
  for path in ("", "/metadata"):  # a version beyond int64 in the URL: was a 500 (the ModelSpec)
    code, body = _http(served, "GET", "/v1/models/skiprec_latest/versions/" + "9" * 30 + path)
    assert code == 404 and "Servable not found" in body["error"]


def _http(ns, method: str, path: str, body: bytes = b"", length: str | None = None):
  """(status, JSON body) on a new connection; a dropped connection or a hang raises."""
  with contextlib.closing(http.client.HTTPConnection("127.0.0.1", ns.port,
                                                     timeout=DEADLINE)) as connection:
    connection.request(method, path, body, {} if length is None else {"Content-Length": length})
    response = connection.getresponse()
    return response.status, json.loads(response.read())
