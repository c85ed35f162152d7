"""The soak (bench/soak.py) for 30 s: the batching server, 8 clients, a version published
every 10 s and the one before retired while requests are on it; every answer checked against
the version it names. The 10-minute run is bench/serving_soak.py."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
from soak import SoakSpec, answer, differences, run_soak  # noqa: E402  (bench/soak.py)

pytestmark = pytest.mark.slow


def test_the_checker_allows_tied_items_to_trade_places_and_nothing_else():
  expected = {"ids": ["a", "b", "c"], "scores": [3.0, 2.0, 2.0], "blocks": 4}
  assert differences(dict(expected), expected) == ""
  tied = {"ids": ["a", "c", "b"], "scores": [3.0, 2.0, 2.0 + 1e-6], "blocks": 4}
  assert differences(tied, expected) == ""
  assert "item 0" in differences({**expected, "ids": ["b", "a", "c"]}, expected)
  assert "item 2" in differences({**expected, "ids": ["a", "b", "z"]}, expected)
  assert "scores" in differences({**expected, "scores": [3.0, 2.0, 2.1]}, expected)
  assert "blocks" in differences({**expected, "blocks": 5}, expected)
  assert "items" in differences({**expected, "ids": ["a"], "scores": [3.0]}, expected)


def test_an_answer_with_other_than_one_row_cannot_be_read():
  one = {"item_ids": np.array([[b"a", b"b"]], object), "scores": np.array([[2.0, 1.0]]),
         "blocks_executed": np.array([3])}
  assert answer(one, 1) == {"ids": ["a"], "scores": [2.0], "blocks": 3}
  with pytest.raises(ValueError, match="rows"):
    answer({**one, "scores": np.array([[2.0, 1.0], [0.0, 0.0]])}, 1)


def test_a_30_second_soak_with_version_swaps_has_no_error_and_no_wrong_answer(tmp_path):
  spec = SoakSpec(seconds=30, swap_seconds=10, ahead=3, blocks=4, channels=16, pool=64)
  report = run_soak(spec, str(tmp_path), progress=lambda line: None)
  assert report["publisher_ok"], (tmp_path / "publisher.log").read_text()[-3000:]
  assert report["answers"] > 1000
  assert report["clients_ok"] == spec.clients
  assert report["errors"] == 0, report["error_examples"]
  assert report["wrong_answers"] == 0, report["wrong_examples"]
  assert report["versions_published"] == [1, 2, 3, 4]
  assert report["swaps_answered"] >= 2, report["answers_by_version"]   # v4 comes at 25 s
  assert {int(v) for v in report["answers_by_version"]} <= {1, 2, 3, 4}
  assert 1 in report["versions_retired"]   # only the newest is served: 1 goes when 2 comes
  batching = report["server_batching"]
  assert batching["requests"] == report["answers"]
  assert batching["batches"] < batching["requests"]   # requests were merged
  assert report["rss_mb"]["max"] > 0
