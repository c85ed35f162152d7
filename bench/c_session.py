"""TF Serving's own call, timed without Python: bench/session_run.c, built against the venv's
TensorFlow (its C API headers and libtensorflow_cc, shipped in the wheel), loads SavedModels with
TF_LoadSessionFromSavedModel and times TF_SessionRun on their signatures' tensors.

Why: TF Serving's Predict is C++ around Session::Run. Python's Session.run adds ~0.2 ms a call
on this machine (feeds, fetches, the GIL; BUILD_NOTES, issue 15), which a one-user request of a
10-block model would count as fixed work that TF Serving does not pay. The Python timings stay
beside these in bench/serving_trained.py.

  binary = build(directory)                        # gcc, once; needs gcc and the venv's TensorFlow
  runs = time_signatures(binary, models, calls, histories, batches, intra=1, inter=1)

Each call of time_signatures is one fresh process (the binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "session_run.c")


def tensorflow_dir() -> str:
  import importlib.util  # noqa: PLC0415
  spec = importlib.util.find_spec("tensorflow")
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError("c_session: TensorFlow is not installed in this Python. Fix: run this "
                       "bench with the project's .venv/bin/python.")
  return list(spec.submodule_search_locations)[0]


def build(directory: str) -> str:
  """Compiles session_run.c into `directory` (again only if the source is newer); its path."""
  binary = os.path.join(directory, "session_run")
  if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(SOURCE):
    return binary
  compiler = shutil.which("gcc") or shutil.which("cc")
  if compiler is None:
    raise RuntimeError("c_session: no C compiler (gcc or cc) on PATH. Fix: install gcc, or run "
                       "bench/serving_trained.py with --harness=python.")
  tf_dir = tensorflow_dir()
  for lib in ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2"):
    if not os.path.exists(os.path.join(tf_dir, lib)):
      raise RuntimeError(f"c_session: {lib} is not in {tf_dir}. Fix: use the pinned tensorflow "
                         "wheel (requirements.lock), which ships it.")
  os.makedirs(directory, exist_ok=True)
  command = [compiler, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", binary, SOURCE,
             "-I" + os.path.join(tf_dir, "include"), "-L" + tf_dir, "-l:libtensorflow_cc.so.2",
             "-l:libtensorflow_framework.so.2", "-Wl,-rpath," + tf_dir]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"c_session: compiling {SOURCE} failed:\n{done.stderr}")
  return binary


def signature_tensors(export_dir: str, signature: str) -> tuple[str, list[str], list[str]]:
  """The `history` input's tensor name, and every output's alias and tensor name, of a signature
  of the SavedModel in export_dir (read from saved_model.pb; no Session)."""
  from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved = saved_model_pb2.SavedModel.FromString(f.read())
  signatures = saved.meta_graphs[0].signature_def
  if signature not in signatures:
    raise KeyError(f"{export_dir}: no signature {signature!r}; it has {sorted(signatures)}")
  sig = signatures[signature]
  aliases = sorted(sig.outputs)
  return sig.inputs["history"].name, aliases, [sig.outputs[a].name for a in aliases]


def time_signatures(binary: str, models: list[str], calls: list[tuple[str, int, str]],
                    histories: np.ndarray, batches: list[tuple[int, int]], *, intra: int,
                    inter: int, blocks_call: str | None = None) -> dict[int, dict]:
  """One fresh process: every (label, model index, signature) in `calls` timed interleaved, on
  `histories` ([U, W] raw ids), at each (batch size, reps). Returns {batch: {"times": {label:
  [ms, ...]}, "mean_blocks": mean blocks_executed of blocks_call (None without one)}}."""
  from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415
  config = config_pb2.ConfigProto(intra_op_parallelism_threads=intra,
                                  inter_op_parallelism_threads=inter)
  histories = np.asarray(histories).astype(str)
  if histories.ndim != 2 or any("\n" in x for x in histories.ravel()):
    raise ValueError("c_session: histories must be [users, width] raw ids without newlines")
  with tempfile.TemporaryDirectory() as tmp:
    ids = os.path.join(tmp, "histories.txt")
    with open(ids, "w") as f:
      f.write("".join(x + "\n" for x in histories.ravel()))
    lines = [f"config {config.SerializeToString().hex()}"]
    lines += [f"model {path}" for path in models]
    for label, model, signature in calls:
      history, aliases, outputs = signature_tensors(models[model], signature)
      lines.append(f"call {label} {model} {history} {' '.join(outputs)}")
      if label == blocks_call:
        blocks_position = aliases.index("blocks_executed")
    lines.append(f"histories {ids} {histories.shape[0]} {histories.shape[1]}")
    if blocks_call is not None:
      lines.append(f"blocks {blocks_call} {blocks_position}")
    lines += [f"batch {b} {reps}" for b, reps in batches]
    plan = os.path.join(tmp, "plan.txt")
    with open(plan, "w") as f:
      f.write("\n".join(lines) + "\n")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([binary, plan], capture_output=True, text=True, env=env, check=False)
  if done.returncode:
    raise RuntimeError(f"c_session: {binary} failed:\n{done.stderr[-4000:]}")
  out: dict[int, dict] = {}
  for line in done.stdout.splitlines():
    kind, batch, *rest = line.split()
    entry = out.setdefault(int(batch), {"times": {}, "mean_blocks": None})
    if kind == "times":
      entry["times"][rest[0]] = [float(ns) / 1e6 for ns in rest[1:]]
    elif kind == "blocks" and blocks_call is not None:
      entry["mean_blocks"] = int(rest[0]) / max(1, int(rest[1]))
  return out
