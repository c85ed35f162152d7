"""The compute a request costs (tf_skiprec/compute.py): closed forms, and the end-of-run report
that puts the policy's cost beside the blocks'."""

import pytest

from tf_skiprec.compute import request_compute
from tf_skiprec.experiments import get_config
from tf_skiprec.training.report import result_table


def test_request_compute_counts_the_policy_beside_the_blocks():
  config = get_config("smoke")            # 4 blocks x 16 channels, kernel 3, window 20
  config.train.mode = "gumbel"
  block = 2 * 2 * 3 * 16 * 16 * 20        # two convolutions over the window
  softmax, head = 2 * 16 * 81, 2 * 16 * 2 * 4
  c = request_compute(config, 1.5, 80)
  assert c["blocks"] == pytest.approx(1.5 * block / 1e6)
  assert c["policy"] == pytest.approx((2 * block + head) / 1e6)           # the cnn body: 2 blocks
  assert c["softmax"] == pytest.approx(softmax / 1e6)
  assert c["total"] == pytest.approx(c["blocks"] + c["policy"] + c["softmax"])
  assert c["full"] == pytest.approx((4 * block + softmax) / 1e6)
  assert c["policy_in_blocks"] == pytest.approx(2 + head / block)
  assert c["of_full"] == pytest.approx(c["total"] / c["full"])
  assert c["of_full"] > 1.5 / 4                          # the policy is not free
  config.policy.body = "pool"
  assert request_compute(config, 1.5, 80)["policy_in_blocks"] == pytest.approx(
      (4 * 16 * 16 + head) / block)
  config.train.mode = "pretrain"                         # the backbone alone: no policy
  assert request_compute(config, 4, 80)["policy"] == 0 and (
      request_compute(config, 4, 80)["of_full"] == pytest.approx(1.0))


def test_the_report_gives_the_policys_cost_beside_the_blocks():
  config = get_config("smoke")
  config.train.mode = "gumbel"
  row = {f"{m}@{k}": 0.5 for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
  blocks = {"mean": 1.5, "num_blocks": 4, "min": 1, "max": 2, "distinct_policies": 2,
            "block_usage": [1.0, 0.5, 0.0, 0.0], "by_kind": {}}
  result = {"mode": "gumbel", "valid": row, "test": row, "valid_blocks": blocks,
            "test_blocks": blocks, "threshold_sweep": [],
            "test_compute": request_compute(config, 1.5, 80)}
  line = next(l for l in result_table(result).splitlines() if l.startswith("compute per request"))
  # blocks 1.5 x 61,440; policy 2 x 61,440 + 256; softmax 2,592; full 4 x 61,440 + 2,592
  assert line == ("compute per request (test, estimated): 0.218 MFLOPs = blocks 0.092 + policy "
                  "0.123 (2.0 blocks' worth) + softmax 0.003; 88% of the full backbone's 0.248")


def test_the_budget_is_the_requests_compute_and_the_blocks_aim_at_what_the_policy_leaves():
  from tf_skiprec.compute import block_budget, budget_for_usage, policy_share
  from tf_skiprec.training.builders import make_schedules
  config = get_config("smoke")            # 4 blocks x 16 channels, kernel 3, window 20
  config.train.mode = "gumbel"
  block, head = 2 * 2 * 3 * 16 * 16 * 20, 2 * 16 * 2 * 4
  assert policy_share(config) == pytest.approx((2 * block + head) / (4 * block))   # 0.501
  config.policy.budget = budget_for_usage(config, 0.3)
  assert config.policy.budget == pytest.approx(0.3 + policy_share(config))
  assert block_budget(config) == 0.3                  # exactly: the recipes' targets are kept
  assert make_schedules(config).budget(10 ** 6).numpy() == pytest.approx(0.3)  # what the loss uses
  config.policy.body = "pool"                         # the same budget leaves the blocks more
  assert block_budget(config) == pytest.approx(0.3 + policy_share(get_config("smoke"))
                                               - (4 * 16 * 16 + head) / (4 * block))
  config.policy.budget_counts_policy = False          # the blocks' usage alone
  assert block_budget(config) == config.policy.budget


def test_a_budget_below_the_policys_own_cost_is_refused_with_a_fix_that_works():
  from tf_skiprec.errors import ConfigError
  config = get_config("smoke")
  config.train.mode, config.policy.budget = "gumbel", 0.4    # the cnn policy alone costs 0.501
  with pytest.raises(ConfigError, match="policy.budget = 0.4: below the policy network's own "
                                        "cost, 0.501 of the full backbone's compute") as e:
    config.validate()
  for fix in str(e.value).split("Fix: ")[1].split(", or "):
    candidate = get_config("smoke")
    candidate.train.mode, candidate.policy.budget = "gumbel", 0.4
    candidate.override(fix.split("--override ")[1].split(" ")[0])
    candidate.validate()                                      # each fix is valid on its own
  config.train.mode = "pretrain"                              # no policy: no such rule
  config.validate()


def test_a_sasrec_block_counts_projections_attention_and_feed_forward():
  config = get_config("smoke")            # window 20, 16 channels
  config.train.mode = "gumbel"
  conv_policy = request_compute(config, 1.5, 80)["policy"]
  config.model.backbone, config.model.inner_size = "sasrec", 24
  length, channels, inner = 20, 16, 24
  block = length * (4 * 2 * channels * channels          # query, key, value, output projections
                    + 2 * 2 * length * channels          # scores and the weighted sum, all keys
                    + 2 * 2 * channels * inner)          # the feed-forward layer's two products
  c = request_compute(config, 1.5, 80)
  assert c["blocks"] == pytest.approx(1.5 * block / 1e6)
  assert c["full"] == pytest.approx((4 * block + 2 * 16 * 81) / 1e6)
  assert c["policy"] == pytest.approx(conv_policy)       # the cnn policy is the same network
  config.model.inner_size = 0                            # 0: the channels
  assert request_compute(config, 1, 80)["blocks"] == pytest.approx(
      length * (8 * channels ** 2 + 4 * length * channels + 4 * channels ** 2) / 1e6)


def test_the_cnn_policy_is_priced_with_the_kernel_it_is_built_with():
  from tf_skiprec.compute import POLICY_KERNEL_SIZE, policy_flops
  from tf_skiprec.training import builders
  config = get_config("smoke")
  config.train.mode = "gumbel"
  model = builders.build_model(config, vocab_size=81)
  assert {b.kernel_size for b in model.policy.blocks} == {POLICY_KERNEL_SIZE}
  before = policy_flops(config)
  config.model.kernel_size = 5             # the backbone's kernel: not the policy's
  assert policy_flops(config) == before
