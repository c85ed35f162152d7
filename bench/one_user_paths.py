"""Ways to skip blocks for one user (B = 1), measured side by side: what each costs beyond the
blocks it runs, and what a Session run costs with nothing in it.

  .venv/bin/python bench/one_user_paths.py                      # 32 x 32, 5 kept: ~3 min
  .venv/bin/python bench/one_user_paths.py --blocks=10 --channels=64 --kept=4

A backbone of frozen NextItNet+ blocks (random weights, dilations 1, 2 repeated; the export's
own FrozenResidualBlock) is saved with one signature per variant, x [1, L, C] and keep [1, N] in,
the hidden state out, and loaded as TF Serving loads it (a Session, 1 intra-op and 1 inter-op
thread, Eigen kernels). Variants:

  none         returns its input: a Session run with nothing in it
  all          every block (the `full` signature's loop)
  ifs          one functional If per block (the export's one-user path before the Case)
  case4, case8 one functional Case per group of 4 or 8 blocks, a branch per keep pattern
               (16 or 256 branches a group), each branch calling its kept blocks (case4 is
               the export's one-user path)
  loop         a while loop over the kept blocks' indices (lowered: no function call), the
               weights gathered from stacked constants and the dilated convolutions done by a
               gather of the taps (the dilation is a tensor)
  *_nested     ifs and case4 inside a functional If on the batch size, as in the export

Every variant is checked against `ifs` (1e-5). Each is called --reps times, interleaved, with a
Session callable (the feeds and fetches bound once, as TF Serving's C++ Session::Run has no
Python around it), and in a second pass with RunOptions.inter_op_thread_pool = -1 (the ops run
on the calling thread: what is left is the executor, not the thread hand-offs). Overhead =
median - none - kept x (all - none) / N. Writes bench/results/one_user_paths/<N>x<C>.json.

A micro-benchmark: its variants sit at the top of the signature. In the trained exports an
interleaved A/B confirmed case4 (0.11-0.14 ms saved per one-user request of a 32-block model;
BUILD_NOTES.md, issue 15), and the export now uses it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCKS = flags.DEFINE_integer("blocks", 32, "Residual blocks.")
CHANNELS = flags.DEFINE_integer("channels", 32, "Channels.")
LENGTH = flags.DEFINE_integer("length", 64, "History window.")
KEPT = flags.DEFINE_integer("kept", 5, "Blocks the user keeps (chosen at random).")
REPS = flags.DEFINE_integer("reps", 2000, "Calls per variant and pass.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "one_user_paths"),
                          "Directory of the JSON.")


def build_blocks(n: int, c: int, length: int, rng):
  """n frozen blocks of c channels with random weights (alpha 0.5)."""
  import numpy as np  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415

  from tf_skiprec.export.frozen import FrozenResidualBlock  # noqa: PLC0415
  from tf_skiprec.layers import ResidualBlock  # noqa: PLC0415

  blocks = []
  for i in range(n):
    block = ResidualBlock(c, dilation=(1, 2)[i % 2])
    block(tf.zeros((1, length, c)), tf.ones((1, length, 1)))
    for v in block.weights:
      v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32) if v.shape.rank else 0.5)
    blocks.append(FrozenResidualBlock(block))
  return blocks


def variants(blocks, channels: int) -> dict:
  """{name: fn(x [1, L, C], mask [1, L, 1], keep [1, N] bool) -> [1, L, C]}."""
  import numpy as np  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415

  from tf_skiprec.export.serving_module import _lowering  # noqa: PLC0415

  n = len(blocks)
  k = blocks[0].kernel_size

  def none(x, mask, keep):
    return x

  def run_all(x, mask, keep):
    for block in blocks:
      x = block.run(x, mask)
    return x

  def ifs(x, mask, keep):
    keeps = tf.unstack(keep[0], n)
    with _lowering(False):
      for i, block in enumerate(blocks):
        x = tf.cond(keeps[i], lambda x=x, block=block: block.run(x, mask), lambda x=x: x)
    return x

  def cases(group):
    def fn(x, mask, keep):
      bits = tf.cast(keep[0], tf.int32)
      with _lowering(False):
        for start in range(0, n, group):
          members = blocks[start:start + group]
          index = tf.reduce_sum(bits[start:start + group] * (2 ** tf.range(len(members))))

          def branch(pattern, x=x, members=members):
            def run():
              y = x
              for j, block in enumerate(members):
                if pattern >> j & 1:
                  y = block.run(y, mask)
              return tf.identity(y)
            return run

          x = tf.switch_case(index, [branch(p) for p in range(2 ** len(members))])
      return x
    return fn

  stacked = {name: tf.constant(np.stack([b.weights[name] for b in blocks]))
             for name in blocks[0].weights}
  dilation = tf.constant([b.dilation for b in blocks], tf.int32)
  widest = 2 * max(b.dilation for b in blocks)

  def conv(x, kernel, bias, d):
    """Causal convolution of dilation d (a tensor): gather the k taps, one matmul."""
    length = tf.shape(x)[1]
    padded = tf.pad(x, [[0, 0], [(k - 1) * widest, 0], [0, 0]])
    taps = (tf.range(length)[:, None] + (k - 1) * widest
            - (k - 1 - tf.range(k))[None, :] * d)                          # [L, k]
    h = tf.reshape(tf.gather(padded, tf.reshape(taps, [-1]), axis=1), [-1, length, k * channels])
    return tf.nn.bias_add(tf.einsum("blk,ko->blo", h, tf.reshape(kernel, [k * channels, -1])),
                          bias)

  norm = blocks[0]._norm  # noqa: SLF001  (the export's LayerNorm, the same epsilon)

  def loop(x, mask, keep):
    index = tf.cast(tf.where(keep[0])[:, 0], tf.int32)
    count = tf.size(index)

    def body(i, x):
      b = index[i]
      w = {name: tf.gather(value, b) for name, value in stacked.items()}
      d = tf.gather(dilation, b)
      h = tf.nn.relu(norm(conv(x, w["kernel1"], w["bias1"], d), w["gamma1"], w["beta1"]))
      h = tf.nn.relu(norm(conv(h, w["kernel2"], w["bias2"], 2 * d), w["gamma2"], w["beta2"]))
      return i + 1, x + w["alpha"] * h * mask

    with _lowering(True):
      _, x = tf.while_loop(lambda i, x: i < count, body, [tf.constant(0), x])
    return x

  def nested(inner):
    """`inner` inside the export's dispatch between one user and a batch (a functional If)."""
    def fn(x, mask, keep):
      with _lowering(False):
        return tf.cond(tf.equal(tf.shape(x)[0], 1), lambda: inner(x, mask, keep),
                       lambda: run_all(x, mask, keep))
    return fn

  return {"none": none, "all": run_all, "ifs": ifs, "case4": cases(4), "case8": cases(8),
          "loop": loop, "ifs_nested": nested(ifs), "case4_nested": nested(cases(4))}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not 0 <= KEPT.value <= BLOCKS.value:
    raise app.UsageError(f"--kept={KEPT.value}: the user keeps 0 to --blocks={BLOCKS.value} "
                         "blocks. Fix: lower --kept or raise --blocks.")
  os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # TF Serving's standard CPU build: Eigen kernels
  sys.path.insert(0, REPO)
  import numpy as np  # noqa: PLC0415
  import tf_skiprec  # noqa: F401, PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow.python.platform import tf_logging  # noqa: PLC0415
  tf_logging.get_logger().setLevel("ERROR")

  n, c, length = BLOCKS.value, CHANNELS.value, LENGTH.value
  rng = np.random.default_rng(0)
  blocks = build_blocks(n, c, length, rng)
  fns = variants(blocks, c)
  spec = [tf.TensorSpec([None, None, c], tf.float32, name="x"),
          tf.TensorSpec([None, n], tf.bool, name="keep")]
  signatures = {name: tf.function(lambda x, keep, fn=fn: {"y": fn(x, tf.ones_like(x[..., :1]),
                                                                    keep)},
                                  input_signature=spec) for name, fn in fns.items()}
  with tempfile.TemporaryDirectory() as tmp:
    tf.saved_model.save(tf.Module(), tmp, signatures=signatures)
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                      inter_op_parallelism_threads=1)
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
      meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], tmp)
  x = rng.normal(size=(1, length, c)).astype(np.float32)
  keep = np.zeros((1, n), bool)
  keep[0, rng.choice(n, KEPT.value, replace=False)] = True
  inline = tf.compat.v1.RunOptions(inter_op_thread_pool=-1)
  calls = {}
  for name in fns:
    sig = meta.signature_def[name]
    feeds = [sig.inputs["x"].name, sig.inputs["keep"].name]
    calls[name] = {"pool": session.make_callable([sig.outputs["y"].name], feeds),
                   "caller thread": session.make_callable([sig.outputs["y"].name], feeds,
                                                          accept_options=True)}
  reference = calls["ifs"]["pool"](x, keep)[0]
  for name in ("case4", "case8", "loop", "ifs_nested", "case4_nested"):
    np.testing.assert_allclose(calls[name]["pool"](x, keep)[0], reference, atol=1e-5,
                               err_msg=name)
  result = {"command": "bench/one_user_paths.py " + " ".join(sys.argv[1:]), "num_blocks": n,
            "channels": c, "length": length, "kept": KEPT.value, "reps": REPS.value,
            "threads": "1 intra-op + 1 inter-op, Eigen", "median_ms": {}, "overhead_ms": {}}
  for mode in ("pool", "caller thread"):
    times = {name: [] for name in calls}
    for r in range(REPS.value + 20):
      for name, call in calls.items():
        start = time.perf_counter()
        if mode == "pool":
          call["pool"](x, keep)
        else:
          call["caller thread"](x, keep, options=inline)
        if r >= 20:
          times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    block = (ms["all"] - ms["none"]) / n
    result["median_ms"][mode] = ms
    result["overhead_ms"][mode] = {name: ms[name] - ms["none"] - KEPT.value * block
                                   for name in fns if name not in ("none", "all")}
    result["overhead_ms"][mode]["one block"] = block
  os.makedirs(OUT.value, exist_ok=True)
  path = os.path.join(OUT.value, f"{n}x{c}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  for mode in result["median_ms"]:
    print(f"\n{mode}: median ms (overhead beyond none + {KEPT.value} blocks)")
    for name, value in result["median_ms"][mode].items():
      extra = result["overhead_ms"][mode].get(name)
      print(f"  {name:12s} {value:7.3f}" + ("" if extra is None else f"   ({extra:+.3f})"))
  print(f"\nwrote {path}")


if __name__ == "__main__":
  app.run(main)
