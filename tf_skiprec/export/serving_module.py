"""The exported model: raw item ids in, raw item ids out, and skipped blocks that are not run.

docs/method.md §4: the release computed every block and masked, which saves nothing. Here a
block runs only for the users whose policy keeps it:
  B = 1: the blocks in groups of 4, each group one `Case` on its keep pattern whose taken branch
    runs exactly the group's kept blocks;
  B > 1: each block gathers the rows that keep it, runs on those rows alone and scatters the
    results back (all rows: run directly; no row: not run at all).
Every op is left unplaced (no `tf.device`), so TF Serving's GPU build places the model on the GPU.
The residual blocks are exported as frozen copies (weights as constants inside each block's
branch, tf_skiprec/export/frozen.py), so a block's conditional has the hidden state as its only
input. The module uses only the names every backbone exposes (tf_skiprec/backbones/).

Signatures (`ServingModule.signatures()`), all with histories of raw item ids, "" = padding:
  serving_default(history [B, L] string, k [1] or [B] int32 = top_k,
                  threshold [1] or [B] float32 = the trained keep threshold,
                  max_blocks [1] or [B] int32 = the trained cap, else N)
    -> item_ids [B, K] string, scores [B, K] float32, blocks_executed [B] int32,
       unknown_items [B] int32, history_length [B] int32   (K = max k; entries beyond a row's
       own k are "" with score 0)
  full(history, k) -> the same with every block executed
  decisions(history, threshold, max_blocks) -> keep [B, N] int32, keep_probability [B, N]
       float32, blocks_executed [B] int32, used_history [B, max_len] string (what the model saw)
A row runs block i iff P(keep_i) >= its threshold and block i is among its max_blocks most
probable blocks (policy.keep_at_most): max_blocks is the compute knob that spans 0..N blocks
(with threshold 0, exactly m blocks; with the default threshold it only sheds blocks).
`k`, `threshold` and `max_blocks` are vectors, not scalars, so that TF Serving's server-side
batching (which concatenates every input along dimension 0) can batch requests: a [1] value
applies to every row.
"""

from __future__ import annotations

import tensorflow as tf

import contextlib
import functools

from tensorflow.python.ops import control_flow_util_v2

from tf_skiprec import policy as policy_lib
from tf_skiprec.export.frozen import FrozenPolicy, freeze_block

PADDING = ""  # the raw id of padding in a history
ONE_USER_GROUP = 4  # blocks per Case on the one-user path (2**4 branches each)


class ServingModule(tf.Module):
  """Wraps a trained model (BackboneModel or SkipRecModel) for export.

  Args:
    model: the trained model. Its embedding, softmax and policy are tracked (their variables are
      the export's); its residual blocks are copied as frozen blocks.
    vocab_file: a text file, line i = the raw id of dense id i + 1 (tf_skiprec.export writes it).
    max_len: the history window the model was trained on.
    top_k: the default k.
    threshold: the default keep threshold (docs/method.md §2): serving_default runs block i iff
      P(keep_i) >= threshold, unless the request sends its own.
    max_blocks: the default cap (policy.max_blocks): a row runs at most its max_blocks most
      probable blocks, unless the request sends its own; None or 0: every block may run.
  """

  def __init__(self, model, vocab_file: str, max_len: int, top_k: int = 10,
               threshold: float = 0.5, max_blocks: int | None = None):
    super().__init__(name="skiprec_serving")
    # The backbone is used but not tracked: its blocks are exported as constants (self.blocks),
    # so the export saves only the variables its graphs read, the embedding path and the
    # softmax (tracked here) and the policy. Tracking the whole backbone stored every block's
    # weights a second time (205 MB instead of ~105 MB at 64 blocks x 256 channels).
    object.__setattr__(self, "backbone", model.backbone)
    self.item_embedding = model.backbone.embedding
    self.embed_variables = list(model.backbone.embed_variables())  # SASRec: + positions, norm
    self.softmax = list(model.backbone.output_variables())
    self.blocks = [freeze_block(block) for block in model.backbone.blocks]
    policy = getattr(model, "policy", None)
    if policy is not None and policy.body == "cnn":  # likewise: constants but its embedding
      self.policy_embedding = policy.embedding
      object.__setattr__(self, "policy", FrozenPolicy(policy))
    else:
      self.policy = policy
    self.max_len = int(max_len)
    positions = getattr(model.backbone, "max_len", None)  # SASRec: its position table's size
    if positions is not None and self.max_len > positions:
      raise ValueError(f"max_len={self.max_len}: the backbone has positions for {positions} "
                       f"items only. Fix: export with max_len <= {positions} (the run's "
                       "data.max_len).")
    self.num_items = int(self.backbone.vocab_size) - 1
    self.default_k = int(top_k)
    self.default_threshold = float(threshold)
    num_blocks = self.backbone.num_blocks
    if max_blocks and not 1 <= max_blocks <= num_blocks:
      raise ValueError(f"max_blocks={max_blocks}: the backbone has {num_blocks} blocks. Fix: "
                       f"export with max_blocks in 1..{num_blocks}, or 0 for no cap.")
    self.default_max_blocks = int(max_blocks or num_blocks)
    self.vocab = tf.saved_model.Asset(vocab_file)
    line = tf.lookup.TextFileIndex.LINE_NUMBER
    whole = tf.lookup.TextFileIndex.WHOLE_LINE
    self.raw_to_line = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(self.vocab, tf.string, whole, tf.int64, line), -1)
    self.line_to_raw = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(self.vocab, tf.int64, line, tf.string, whole), PADDING)

  # --------------------------------------------------------------------------------------------
  # Signatures.

  def signatures(self) -> dict:
    """{name: concrete function} for tf.saved_model.save, with fixed input signatures."""
    history = tf.TensorSpec([None, None], tf.string, name="history")
    k = tf.TensorSpec([None], tf.int32, name="k")
    threshold = tf.TensorSpec([None], tf.float32, name="threshold")
    max_blocks = tf.TensorSpec([None], tf.int32, name="max_blocks")
    default_k = tf.constant([self.default_k], tf.int32)
    default_t = tf.constant([self.default_threshold], tf.float32)
    default_m = tf.constant([self.default_max_blocks], tf.int32)

    def serve(history, k=default_k, threshold=default_t, max_blocks=default_m):
      return self.recommend(history, k, threshold, max_blocks)

    def full(history, k=default_k):
      return self.recommend(history, k, None)

    def decisions(history, threshold=default_t, max_blocks=default_m):
      return self.decide(history, threshold, max_blocks)

    return {
        "serving_default": tf.function(serve,
                                       input_signature=[history, k, threshold, max_blocks]),
        "full": tf.function(full, input_signature=[history, k]),
        "decisions": tf.function(decisions, input_signature=[history, threshold, max_blocks]),
    }

  def recommend(self, history: tf.Tensor, k: tf.Tensor, threshold: tf.Tensor | None,
                max_blocks: tf.Tensor | None = None) -> dict:
    """history [B, L] raw ids, k [1|B], threshold [1|B] (None: every block), max_blocks [1|B]
    (None: no cap) -> outputs."""
    ids, unknown, length = self.encode(history)                            # [B, W], [B], [B]
    batch = tf.shape(ids)[0]
    k = self._per_row(k, batch, "k")                                       # [B]
    with tf.control_dependencies([
        tf.debugging.assert_greater_equal(k, 1, message="k must be at least 1"),
        tf.debugging.assert_less_equal(
            k, self.num_items, message=f"k must be at most the {self.num_items} items")]):
      max_k = tf.reduce_max(tf.concat([k, [1]], axis=0))
    if threshold is None:
      keep = tf.ones([batch, self.backbone.num_blocks], tf.bool)
      hidden = self.run_all_blocks(ids)
    else:
      keep = self.keep(ids, threshold, max_blocks)                           # [B, N]
      hidden = self.run_kept_blocks(ids, keep)
    scores, line = self.top_items(hidden[:, -1], max_k)                    # [B, K]
    in_k = tf.range(max_k)[tf.newaxis, :] < k[:, tf.newaxis]               # [B, K]
    item_ids = tf.where(in_k, self.line_to_raw.lookup(tf.cast(line, tf.int64)), PADDING)
    return {"item_ids": item_ids, "scores": tf.where(in_k, scores, tf.zeros_like(scores)),
            "blocks_executed": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
            "unknown_items": unknown, "history_length": length}

  def decide(self, history: tf.Tensor, threshold: tf.Tensor,
             max_blocks: tf.Tensor | None = None) -> dict:
    """The policy's decisions for each history: keep [B, N] and P(keep) [B, N]."""
    ids, _, _ = self.encode(history)
    prob = self.keep_probability(ids)
    keep = tf.cast(self.keep(ids, threshold, max_blocks, prob), tf.int32)
    used = tf.where(ids > 0, self.line_to_raw.lookup(tf.cast(ids, tf.int64) - 1), PADDING)
    return {"keep": keep, "keep_probability": prob,
            "blocks_executed": tf.reduce_sum(keep, axis=1), "used_history": used}

  # --------------------------------------------------------------------------------------------
  # The pieces.

  def encode(self, history: tf.Tensor):
    """Raw ids [B, L] -> (dense ids [B, max_len] int32, unknown [B] int32, length [B] int32).

    Padding ("") and unknown ids are dropped wherever they are, the remaining items keep their
    order, the last max_len of them are kept, and the result is left-padded with 0: exactly the
    histories the model was trained on. `unknown` counts the non-padding ids not in the id map.
    """
    line = self.raw_to_line.lookup(history)                                # [B, L], -1 if absent
    known = line >= 0
    unknown = tf.reduce_sum(tf.cast(tf.logical_and(~known, tf.not_equal(history, PADDING)),
                                    tf.int32), axis=1)
    count = tf.reduce_sum(tf.cast(known, tf.int32), axis=1, keepdims=True)  # [B, 1]
    from_end = count - tf.cumsum(tf.cast(known, tf.int32), axis=1)          # 0 = the last item
    kept = tf.logical_and(known, from_end < self.max_len)
    where = tf.where(kept)                                                 # [M, 2] (row, col)
    column = self.max_len - 1 - tf.gather_nd(from_end, where)              # [M]
    target = tf.stack([where[:, 0], tf.cast(column, tf.int64)], axis=1)
    batch = tf.shape(history, out_type=tf.int64)[0]
    ids = tf.scatter_nd(target, tf.cast(tf.gather_nd(line, where) + 1, tf.int32),
                        tf.stack([batch, self.max_len]))
    return ids, unknown, tf.minimum(count[:, 0], self.max_len)

  def top_items(self, hidden: tf.Tensor, k: tf.Tensor):
    """hidden [B, C] -> (scores [B, k], vocabulary lines [B, k] = dense ids - 1): the k best
    real items, best first, ties to the lower id (tf.math.top_k's order).

    O(V * C) per row to score, O(V log k) to select. The padding column is not sliced off the
    [B, V] logits, which copied them (256 MB at B = 64 and 1M items): top_k takes k + 1 over every
    column and drops id 0 from the rows it made; the other ids keep their order.
    """
    logits = self.backbone.logits(hidden)                                  # [B, V]
    scores, index = tf.math.top_k(logits, k=k + 1)                         # [B, k + 1]
    padding_last = tf.argsort(tf.cast(tf.equal(index, 0), tf.int32), axis=1,
                              stable=True)[:, :k]                          # [B, k]
    return (tf.gather(scores, padding_last, batch_dims=1),
            tf.gather(index, padding_last, batch_dims=1) - 1)

  def keep_probability(self, ids: tf.Tensor) -> tf.Tensor:
    """ids [B, W] -> P(keep) [B, N] (all 1 without a policy); a block is kept where it is >= the
    row's threshold."""
    if self.policy is None:
      return tf.ones([tf.shape(ids)[0], self.backbone.num_blocks], tf.float32)
    return policy_lib.keep_probability(self.policy(ids, training=False))

  def keep(self, ids: tf.Tensor, threshold: tf.Tensor, max_blocks: tf.Tensor | None,
           prob: tf.Tensor | None = None) -> tf.Tensor:
    """ids [B, W], threshold [1|B], max_blocks [1|B] or None -> keep [B, N] bool: P(keep) >= the
    row's threshold, and among its max_blocks most probable blocks (without a policy: every
    block whatever the threshold, the first max_blocks with a cap). `prob`: P(keep) if already
    computed."""
    batch = tf.shape(ids)[0]
    prob = self.keep_probability(ids) if prob is None else prob            # [B, N]
    if self.policy is None:                                                  # no decisions
      keep = tf.ones_like(prob, tf.bool)
    else:
      keep = prob >= self._per_row(threshold, batch, "threshold")[:, tf.newaxis]
    if max_blocks is None:
      return keep
    cap = self._per_row(max_blocks, batch, "max_blocks")                   # [B]
    with tf.control_dependencies([tf.debugging.assert_non_negative(
        cap, message="max_blocks must be at least 0 (0 runs no block)")]):
      return tf.logical_and(keep, policy_lib.keep_at_most(prob, cap))

  def run_all_blocks(self, ids: tf.Tensor) -> tf.Tensor:
    """ids [B, W] -> hidden [B, W, C], every block executed."""
    x, seq_mask = self.backbone.embed(ids, training=False)
    for i, block in enumerate(self.blocks):
      with tf.name_scope(f"block_{i}_run"):
        x = block.run(x, seq_mask)
    return x

  def run_kept_blocks(self, ids: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """ids [B, W], keep [B, N] bool -> hidden [B, W, C]; block i runs only on rows keeping it.

    One user: a Case per group of ONE_USER_GROUP blocks on the group's keep pattern. A batch:
    each block runs directly when every row keeps it, on the gathered rows that keep it
    (scattered back) when some do, and not at all when none does.

    The one-user Cases (and the dispatch cond) are functional ops: only the taken branch is
    touched. Lowered to Switch/Merge, as TensorFlow does by default, every op of the untaken
    branch would still be visited to propagate "dead" tensors, which at 64 channels costs about
    half a block per skipped block. The batch conds are lowered, so their ops join the main graph
    (and its optimisations). Both are measured in bench/serving_latency.py.
    """
    x, seq_mask = self.backbone.embed(ids, training=False)
    blocks = list(enumerate(self.blocks))
    with _lowering(False):
      return tf.cond(tf.equal(tf.shape(ids)[0], 1),
                     lambda: self._one_user(blocks, x, seq_mask, keep[0]),
                     lambda: self._batch(blocks, x, seq_mask, keep))

  @staticmethod
  def _one_user(blocks, x, seq_mask, keep):
    """B = 1, keep: [N] bool: the blocks in groups of ONE_USER_GROUP, each group one functional
    `Case` on its keep pattern (2**g branches, each running exactly its kept blocks in order).

    An `If` per block costs ~10 µs of dispatch on this CPU whether or not the block runs; a Case
    per 4 blocks pays it once per group, and saved 0.11-0.14 ms per one-user request of a trained
    32-block export (BUILD_NOTES, "Skipping that pays end to end"). Only the taken branch runs.
    """
    bits = tf.cast(keep, tf.int32)                                            # [N]
    with _lowering(False):
      for start in range(0, len(blocks), ONE_USER_GROUP):
        group = blocks[start:start + ONE_USER_GROUP]
        weights = tf.constant([1 << j for j in range(len(group))], tf.int32)  # [g]
        pattern = tf.reduce_sum(bits[start:start + len(group)] * weights)      # in [0, 2**g)
        x = tf.switch_case(
            pattern, [functools.partial(_run_pattern, group, p, x, seq_mask)
                      for p in range(2 ** len(group))],
            name=f"blocks_{start}_to_{start + len(group) - 1}")
    return x

  @staticmethod
  def _batch(blocks, x, seq_mask, keep):
    """B > 1: per block, all rows (run directly), some rows (gather, run, scatter) or none.

    The gather is `tf.dynamic_partition` (rows that skip | rows that keep) and the scatter
    `tf.dynamic_stitch`, which writes the new state in one pass: `tf.gather` followed by
    `tf.tensor_scatter_nd_update` copied the whole state before updating it, and was 10-15%
    slower at B = 64 (bench/serving_latency.py).
    """
    with _lowering(True):
      batch = tf.shape(x)[0]
      index = tf.range(batch)                                                # [B]
      for i, block in blocks:
        kept = tf.cast(keep[:, i], tf.int32)                                 # [B], 1 = keep
        num_rows = tf.reduce_sum(kept)

        def all_rows(x=x, i=i, block=block):
          with tf.name_scope(f"block_{i}_run"):
            return block.run(x, seq_mask)

        def some_rows(x=x, i=i, block=block, kept=kept):
          with tf.name_scope(f"block_{i}_run"):
            x_skip, x_keep = tf.dynamic_partition(x, kept, 2)                 # [B - R | R, W, C]
            _, mask_keep = tf.dynamic_partition(seq_mask, kept, 2)            # [R, W, 1]
            out = block.run(x_keep, mask_keep)                               # [R, W, C]
          return tf.dynamic_stitch(tf.dynamic_partition(index, kept, 2), [x_skip, out])

        x = tf.cond(tf.equal(num_rows, batch), all_rows,
                    lambda x=x, some_rows=some_rows, num_rows=num_rows:
                    tf.cond(num_rows > 0, some_rows, lambda: x))
    return x

  @staticmethod
  def _per_row(values: tf.Tensor, batch: tf.Tensor, name: str) -> tf.Tensor:
    """A [1] or [B] input -> [B]; any other length is an InvalidArgument error."""
    size = tf.size(values)
    check = tf.debugging.Assert(
        tf.logical_or(tf.equal(size, 1), tf.equal(size, batch)),
        [f"{name} must have 1 value or one per history row; got", size, "for", batch, "rows"])
    with tf.control_dependencies([check]):
      return tf.broadcast_to(values, [batch]) if values.shape.rank else values


def _run_pattern(group, pattern: int, x: tf.Tensor, seq_mask: tf.Tensor) -> tf.Tensor:
  """One branch of a one-user Case: the blocks of `group` ([(i, block)]) whose bit is set in
  `pattern` (bit j = the group's j-th block), in order; x [1, W, C] -> [1, W, C]."""
  for j, (i, block) in enumerate(group):
    if pattern >> j & 1:
      with tf.name_scope(f"block_{i}_run"):
        x = block.run(x, seq_mask)
  return tf.identity(x)


@contextlib.contextmanager
def _lowering(enabled: bool):
  """Whether the tf.cond ops created inside are lowered to Switch/Merge (TensorFlow's default) or
  kept as functional If ops. TensorFlow reads this module flag when it creates each If op (there
  is no public switch); tests/test_export.py checks the attribute in the exported graph."""
  previous = control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE  # noqa: SLF001
  control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = not enabled  # noqa: SLF001
  try:
    yield
  finally:
    control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = previous  # noqa: SLF001
