"""What serving one user costs, in estimated floating-point operations: the blocks it runs, the
policy network that decides them, and the softmax. Used by the end-of-run report (the policy's
cost beside the blocks'), by the tuner (its MFLOPs limit and Pareto plot), and by the budget the
policy learns against: `policy.budget` is a request's compute (its blocks + the policy network)
as a fraction of the full backbone's, so the blocks aim at budget - policy_share
(`block_budget`; docs/method.md §3.2).

The estimates count the matrix products only, over the window: a NextItNet+ block's two
convolutions (2·k·C² per position each), a SASRec block's projections, attention and feed-forward
layer (BLOCK_FLOPS, by model.backbone), the policy's body and head, and the softmax at the last
position. LayerNorm, ReLU, the attention's softmax and lookups are left out (a few percent at
C >= 32).
"""

from __future__ import annotations

# Every `config` below is a tf_skiprec.config.Config. It is not imported: config_rules checks the
# budget with these functions, and the schema (config.py) imports config_rules.


# The cnn policy body's convolution width: PolicyNetwork's default, which the builders keep
# whatever model.kernel_size is (tests/test_compute.py checks that they agree).
POLICY_KERNEL_SIZE = 3


def conv_block_flops(config, kernel_size: int | None = None) -> float:
  """One NextItNet+ residual block over the window: 2 convolutions of 2·k·C² per position
  (k = kernel_size, else model.kernel_size)."""
  channels, k = config.model.channels, kernel_size or config.model.kernel_size
  return float(2 * 2 * k * channels * channels * config.data.max_len)


def attention_block_flops(config) -> float:
  """One SASRec block over the window (L positions, C channels, feed-forward width I): the query,
  key, value and output projections (4 · 2·C² per position), the scores and the weighted sum
  (2 · 2·L·C per position: every key is computed, the causal mask only hides them) and the
  feed-forward layer (2 · 2·C·I per position)."""
  channels, length = config.model.channels, config.data.max_len
  inner = config.model.inner_size or channels
  return float(length * (8 * channels * channels + 4 * length * channels + 4 * channels * inner))


# One block's cost by model.backbone (tf_skiprec/backbones/ REGISTRY has the same names).
BLOCK_FLOPS = {"nextitnet": conv_block_flops, "sasrec": attention_block_flops}


def block_flops(config) -> float:
  """One of the backbone's residual blocks over the window (BLOCK_FLOPS[model.backbone])."""
  return BLOCK_FLOPS[config.model.backbone](config)


def policy_flops(config) -> float:
  """The policy network's own cost per user, by body (policy.body), plus its head (2·C·2N):
  "cnn", 2 NextItNet+ residual blocks (whatever the backbone); "gru", 3 gates of 2·2·C² per
  position; "pool", one dense layer of 2·2C·C on the pooled embeddings (the sums are left out,
  as LayerNorm is)."""
  channels, length = config.model.channels, config.data.max_len
  body = {"cnn": 2 * conv_block_flops(config, POLICY_KERNEL_SIZE),
          "gru": 3 * 2 * 2 * channels * channels * length,
          "pool": 2 * 2 * channels * channels}[config.policy.body]
  return float(body + 2 * channels * 2 * config.model.num_blocks)


def softmax_flops(config, num_items: int) -> float:
  """The scores of every item (and padding) at the last position: 2·C·(V + 1)."""
  return float(2 * config.model.channels * (num_items + 1))


def served_policy_flops(config) -> float:
  """The policy's cost in what is served: policy_flops in SkipRec modes, 0 for a backbone alone."""
  return policy_flops(config) if config.train.mode != "pretrain" else 0.0


def policy_share(config) -> float:
  """The policy network's cost (policy.body) as a fraction of the full backbone's, its N blocks:
  ~2 / N for "cnn" and ~1 / (3·N·W) for "pool" on NextItNet+ (kernel 3); less on SASRec, whose
  blocks cost more. Whatever train.mode: a pretrain config's budget is the one its SkipRec stage
  will use."""
  return policy_flops(config) / (config.model.num_blocks * block_flops(config))


def budget_share(config) -> float:
  """What the budget counts beside the blocks: policy_share, or 0 when policy.budget_counts_policy
  is off (the budget is then the blocks' usage alone, as before issue 15)."""
  return policy_share(config) if config.policy.budget_counts_policy else 0.0


def block_budget(config) -> float:
  """The mean usage (executed blocks / N) the policy aims at and model selection allows:
  policy.budget - budget_share (config_rules refuses a budget below the share)."""
  share = budget_share(config)
  # Rounded so that budget_for_usage(u) gives back u exactly: the recipes' targets are unchanged.
  return round(config.policy.budget - share, 12) if share else config.policy.budget


def budget_for_usage(config, usage: float) -> float:
  """The policy.budget whose blocks aim at `usage`: usage + budget_share (how the recipes state
  theirs: e.g. 0.15 of the blocks + the cnn policy's 0.063 = 0.213 for `default`)."""
  return usage + budget_share(config)


def flops_per_request(config, mean_blocks: float, num_items: int) -> float:
  """Serving one user with a full history window: `mean_blocks` blocks, the policy network
  (SkipRec modes only) and the softmax."""
  return float(mean_blocks * block_flops(config) + softmax_flops(config, num_items)
               + served_policy_flops(config))


def request_compute(config, mean_blocks: float, num_items: int) -> dict[str, float]:
  """The parts of `flops_per_request`, in MFLOPs, beside the backbone with every block:
  {"blocks", "policy", "softmax", "total", "full"} MFLOPs, "policy_in_blocks" (the policy's cost
  in blocks of the backbone) and "of_full" (total / full)."""
  mega = 1e6
  policy = served_policy_flops(config)
  parts = {"blocks": mean_blocks * block_flops(config) / mega, "policy": policy / mega,
           "softmax": softmax_flops(config, num_items) / mega}
  total = sum(parts.values())
  full = (config.model.num_blocks * block_flops(config) + softmax_flops(config, num_items)) / mega
  return {**parts, "total": total, "full": full,
          "policy_in_blocks": policy / block_flops(config), "of_full": total / full}
