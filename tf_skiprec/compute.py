"""What serving one user costs, in estimated floating-point operations: the blocks it runs, the
policy network that decides them, and the softmax. Used by the end-of-run report (the policy's
cost beside the blocks') and by the tuner (its MFLOPs limit and Pareto plot).

The estimates count the matrix products only: each residual block's two convolutions (2·k·C² per
position each, over the window), the policy's body and head, and the softmax at the last position.
LayerNorm, ReLU and lookups are left out (a few percent at C >= 32).
"""

from __future__ import annotations

from tf_skiprec.config import Config


def block_flops(config: Config) -> float:
  """One residual block over the window: 2 convolutions of 2·k·C² per position."""
  channels = config.model.channels
  return float(2 * 2 * config.model.kernel_size * channels * channels * config.data.max_len)


def policy_flops(config: Config) -> float:
  """The policy network's own cost per user, by body (policy.body), plus its head (2·C·2N):
  "cnn", 2 residual blocks as the backbone's; "gru", 3 gates of 2·2·C² per position; "pool",
  one dense layer of 2·2C·C on the pooled embeddings (the sums are left out, as LayerNorm is)."""
  channels, length = config.model.channels, config.data.max_len
  body = {"cnn": 2 * block_flops(config),
          "gru": 3 * 2 * 2 * channels * channels * length,
          "pool": 2 * 2 * channels * channels}[config.policy.body]
  return float(body + 2 * channels * 2 * config.model.num_blocks)


def softmax_flops(config: Config, num_items: int) -> float:
  """The scores of every item (and padding) at the last position: 2·C·(V + 1)."""
  return float(2 * config.model.channels * (num_items + 1))


def served_policy_flops(config: Config) -> float:
  """The policy's cost in what is served: policy_flops in SkipRec modes, 0 for a backbone alone."""
  return policy_flops(config) if config.train.mode != "pretrain" else 0.0


def flops_per_request(config: Config, mean_blocks: float, num_items: int) -> float:
  """Serving one user with a full history window: `mean_blocks` blocks, the policy network
  (SkipRec modes only) and the softmax."""
  return float(mean_blocks * block_flops(config) + softmax_flops(config, num_items)
               + served_policy_flops(config))


def request_compute(config: Config, mean_blocks: float, num_items: int) -> dict[str, float]:
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
