"""Backbones by name: `model.backbone` picks one from REGISTRY, and the rest of the code uses only
the names every backbone exposes.

A backbone is a Keras layer over item ids with skippable residual blocks:
  vocab_size, num_blocks         ints (V includes the padding id 0; N blocks)
  embedding                      the item embedding layer, table [V, C] (the policy's own
                                 embedding starts as a copy of it)
  embed(item_ids, training)      [B, L] -> (x [B, L, C] with padding rows zero, seq_mask [B, L, 1])
  blocks                         the N residual blocks; block.branch(x, seq_mask, training) is the
                                 residual branch F_i(x) [B, L, C], padded steps zero, and
                                 block.branch_at(x, seq_mask, index, training) the same at the
                                 positions index [P, 2] (row, position) only: [P, C]
  call(item_ids, block_mask, training)
                                 [B, L] -> hidden [B, L, C] with the skipping semantics
                                 x_{i+1} = x_i + m_i * F_i(x_i), m = block_mask [B, N] (None: 1)
  counted(item_ids, index, block_mask, training)
                                 [B, L], [P, 2] -> hidden at those positions [P, C], the last
                                 block run there only (the losses' path: the model's
                                 counted_hidden)
  head_input(hidden)             [..., C] -> what the softmax reads [..., C] (a LayerNorm or
                                 the identity)
  logits(hidden)                 [..., C] -> [..., V] (scoring; padding not masked)
  embed_variables()              the variables embed reads (the export keeps them as variables)
  output_weights()               (W [V, C], b [V]) of the softmax (the sampled softmax's input)
  output_variables()             the softmax's variables (the export keeps them as variables)
  score_last(item_ids, block_mask)
                                 [B, L] -> [B, V] scores of the next item; padding scores -1e9
  blocks_to_reach(distance)      the fewest blocks whose output at t can see the item at
                                 t - distance (None: no subset can); the graded synthetic
                                 groups' minimum depth

tf_skiprec/backbones/stack.py runs the blocks with these semantics and scores with the head, for
every backbone. The export (tf_skiprec/export/frozen.py) copies each block as a function with
constant weights;
a backbone with a new kind of block adds its frozen copy there.

Each entry of REGISTRY is build(vocab_size, model, max_len) -> backbone, `model` holding the
ModelConfig fields (tf_skiprec/config.py) and max_len the history window (data.max_len; SASRec's
position embeddings cover it). Its blocks' cost is tf_skiprec/compute.py's BLOCK_FLOPS[name].
"""

from __future__ import annotations

from typing import Any, Callable

from tf_skiprec.backbones import nextitnet, sasrec

REGISTRY: dict[str, Callable[[int, Any, int], Any]] = {
    "nextitnet": nextitnet.build,
    "sasrec": sasrec.build,
}


def build(vocab_size: int, model, max_len: int) -> Any:
  """The backbone `model.backbone` (a ModelConfig) over windows of max_len, named "backbone"."""
  if model.backbone not in REGISTRY:
    raise ValueError(f"model.backbone={model.backbone!r}: not one of {sorted(REGISTRY)}")
  return REGISTRY[model.backbone](vocab_size, model, max_len)
