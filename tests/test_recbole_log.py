"""bench/recbole_log.py: RecBole's log read back with known answers, and the time ratio."""

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
from recbole_log import compare, parse_log  # noqa: E402  (bench/recbole_log.py)


def _epoch(e: int, train: float, valid_seconds: float, score: float) -> str:
  """Two lines as RecBole 1.2.1 logs them (copied from a run's log on 2026-12-02)."""
  return (f"02 Dec 15:42    INFO  epoch {e} training [time: {train:.2f}s, train loss: 2467.1302]\n"
          f"02 Dec 15:42    INFO  epoch {e} evaluating [time: {valid_seconds:.2f}s, "
          f"valid_score: {score:.6f}]\n"
          "02 Dec 15:42    INFO  valid result: \n"
          f"hit@5 : 0.0636    hit@10 : 0.1092    ndcg@10 : {score:.4f}\n")


TAIL = ("02 Dec 17:01    INFO  best valid : OrderedDict([('hit@5', 0.087), ('hit@10', 0.1548), "
        "('ndcg@10', 0.0742), ('mrr@10', 0.0502)])\n"
        "02 Dec 17:01    INFO  test result: OrderedDict([('hit@5', 0.0785), ('hit@10', 0.1326), "
        "('ndcg@10', 0.0636), ('mrr@10', 0.0429)])\n")


def test_the_best_epoch_is_the_first_with_the_highest_score_and_its_time_sums_the_training():
  scores = [0.050, 0.070, 0.070, 0.060]          # epoch 2 ties epoch 1: RecBole keeps epoch 1
  log = "Trainable parameters: 211008\n" + "".join(
      _epoch(e, 100.0 + e, 0.5, s) for e, s in enumerate(scores)) + TAIL
  out = parse_log(log)
  assert out["best_epoch"] == 1 and out["epochs_run"] == 4
  assert out["seconds_to_best"] == pytest.approx(100.0 + 101.0)
  assert out["valid_seconds_to_best"] == pytest.approx(1.0)
  assert out["train_seconds"] == pytest.approx(406.0)
  assert out["mean_epoch_seconds"] == pytest.approx(101.5)
  assert [e["valid_ndcg@10"] for e in out["epochs"]] == scores
  assert out["test"] == {"HR@5": 0.0785, "HR@10": 0.1326, "NDCG@10": 0.0636, "MRR@10": 0.0429}
  assert out["best_valid"]["NDCG@10"] == 0.0742
  assert out["parameters"] == 211008
  assert out["early_stopped"] is False


def test_early_stopping_is_read_and_must_agree_with_the_scores():
  log = "".join(_epoch(e, 10.0, 0.1, s) for e, s in enumerate([0.05, 0.06, 0.055]))
  stopped = log + "INFO  Finished training, best eval result in epoch 1\n"
  assert parse_log(stopped)["early_stopped"] is True
  with pytest.raises(ValueError, match="names epoch 2 as its best, the scores epoch 1"):
    parse_log(log + "INFO  Finished training, best eval result in epoch 2\n")


def test_a_log_with_no_epoch_or_two_runs_in_it_is_refused_with_the_fix():
  with pytest.raises(ValueError, match="did RecBole start"):
    parse_log("Traceback (most recent call last):\nModuleNotFoundError: ray\n")
  two_runs = _epoch(0, 1.0, 0.1, 0.05) + _epoch(2, 1.0, 0.1, 0.06)
  with pytest.raises(ValueError, match="two runs' logs"):
    parse_log(two_runs)


def test_our_seconds_to_best_are_set_against_recbole_s_as_ratios():
  peer = {"seconds_to_best": 2000.0}
  ours = {"runs": {"sas2": [{"seed": s, "seconds_to_best": t, "test": {"NDCG@10": 0.06}}
                            for s, t in ((0, 150.0), (1, 250.0), (2, 200.0))]}}
  c = compare(peer, ours, "sas2")
  assert c["mean_seconds_to_best"] == pytest.approx(200.0)
  assert c["ratio_of_mean"] == pytest.approx(0.1) and c["within_a_tenth"] is True
  assert c["ratios"] == pytest.approx([0.075, 0.125, 0.1])
  assert compare({"seconds_to_best": 1999.0}, ours, "sas2")["within_a_tenth"] is False
  with pytest.raises(ValueError, match="has no runs of 'sas8'"):
    compare(peer, ours, "sas8")


def test_recbole_peer_refuses_a_data_folder_without_its_inter_file_and_names_it(tmp_path):
  script = os.path.join(BENCH, "recbole_peer.py")
  (tmp_path / "ml-100k").mkdir()
  run = subprocess.run([sys.executable, script, f"--python={sys.executable}",
                        f"--data={tmp_path / 'ml-100k'}", f"--workdir={tmp_path / 'w'}"],
                       capture_output=True, text=True, timeout=120)
  assert run.returncode != 0
  assert f"{tmp_path / 'ml-100k' / 'ml-100k.inter'} not found" in run.stderr
  assert not (tmp_path / "w").exists()   # refused before anything is written
