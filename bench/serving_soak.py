"""Soak: the batching server under version swaps, every answer checked (bench/soak.py).

  .venv/bin/python bench/serving_soak.py                     # 10 min, 20 swaps: ~11 min here
  .venv/bin/python bench/serving_soak.py --minutes=0.5 --swap_seconds=8 --ahead=4   # a quick look

8 clients (threads) send one-user Predict requests without pause to the local server in its own
process (`python -m serving.server --enable_batching` with serving/batching_parameters.txt, and a
ModelServerConfig serving the newest `--num_versions`: 1 by default, so that the version retired
is the one the requests in flight are on). A publisher process
exports a new version (random weights, its own seed) every `--swap_seconds` while the clients run,
computes each request's answer from that version alone, and renames the export into the model's
folder; the server loads it and retires the oldest. Every answer is checked against the version
it names; the server's RSS and versions' states are sampled every second.

Prints the errors (by code), wrong answers, swaps, queries/s, p50/p99 and the RSS drift; writes
bench/results/serving_soak/<name>.json and <name>_rss.png (RSS over time, swaps marked).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from absl import app, flags

from ml100k_common import REPO, write_results  # noqa: E402  (bench/)

MINUTES = flags.DEFINE_float("minutes", 10.0, "How long the clients run.")
SWAP = flags.DEFINE_float("swap_seconds", 30.0, "A new version every this many seconds.")
CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients.")
AHEAD = flags.DEFINE_integer("ahead", 1, "Versions exported before the clients start; the others "
                             "are exported while they run, each before its turn.")
NUM_VERSIONS = flags.DEFINE_integer("num_versions", 1, "The version policy: the newest N served "
                                    "(1: the version retired still has requests in flight).")
BLOCKS = flags.DEFINE_integer("blocks", 8, "Residual blocks of each version.")
CHANNELS = flags.DEFINE_integer("channels", 32, "Channels of each version.")
BATCHING_FILE = flags.DEFINE_string("batching_parameters_file",
                                    os.path.join(REPO, "serving", "batching_parameters.txt"),
                                    "The server's --batching_parameters_file.")
WORKDIR = flags.DEFINE_string("workdir", None, "Where the versions, answers and logs go (kept); "
                              "default: a temporary folder, removed after a clean run.")
NAME = flags.DEFINE_string("name", "soak", "Result file name.")
OUT = flags.DEFINE_string("out", os.path.join(REPO, "bench", "results", "serving_soak"),
                          "Directory of the JSON and the plot.")


def main(argv):
  del argv
  import tf_skiprec  # noqa: F401, PLC0415  (Keras 2 before TensorFlow)
  from soak import SoakSpec, run_soak  # noqa: PLC0415  (bench/)

  spec = SoakSpec(seconds=MINUTES.value * 60, swap_seconds=SWAP.value, clients=CLIENTS.value,
                  ahead=AHEAD.value, num_versions=NUM_VERSIONS.value, blocks=BLOCKS.value,
                  channels=CHANNELS.value, batching_parameters_file=BATCHING_FILE.value)
  workdir = WORKDIR.value or tempfile.mkdtemp(prefix="serving_soak_")
  started = time.time()
  report = run_soak(spec, workdir, progress=lambda line: print(line, flush=True))
  report["total_seconds"] = time.time() - started
  with open(spec.batching_parameters_file) as f:
    report["batching_parameters"] = f.read()
  path = write_results(OUT.value, NAME.value, False, {**report, "command": _command(spec)})
  plot = os.path.join(OUT.value, f"{NAME.value}_rss.png")
  if report["rss_samples"]:
    _plot(report, plot)
  print(_summary(report, spec))
  print(f"Results written to {path}" + (f" and {plot}" if report["rss_samples"] else ""))
  clean = (report["errors"] == 0 and report["wrong_answers"] == 0 and report["publisher_ok"]
           and report["clients_ok"] == spec.clients)
  if clean and not WORKDIR.value:
    shutil.rmtree(workdir, ignore_errors=True)
  elif not clean:
    print(f"Kept {workdir} (server.log, publisher.log, expected/).")


def _summary(report: dict, spec) -> str:
  """The report in a few lines (any figure may be missing after a failed run)."""
  def num(value, form: str) -> str:
    return "-" if value is None else format(value, form)
  rss, lines = report["rss_mb"], []
  lines.append(f"\n{report['seconds']:.0f} s, {spec.clients} clients ({report['clients_ok']} ran "
               f"to the end): {report['answers']} answers ({report['qps']:.1f} queries/s, p50 "
               f"{num(report['p50_ms'], '.2f')} ms, p99 {num(report['p99_ms'], '.2f')} ms)")
  lines.append(f"errors: {report['errors']} {report['errors_by_code'] or ''}")
  lines.append(f"wrong answers: {report['wrong_answers']}")
  lines += [f"  {line}" for line in report["error_examples"] + report["wrong_examples"]]
  lines.append(f"swaps: {report['swaps_published']} published, {report['swaps_answered']} "
               f"answered (versions answered {list(report['answers_by_version'])}); versions "
               f"retired: {report['versions_retired']}")
  lines.append(f"server RSS: {num(rss['first'], '.0f')} MiB at the start, "
               f"{num(rss['after_first_swap'], '.0f')} after the first swap, "
               f"{num(rss['last_tenth'], '.0f')} in the last tenth (drift "
               f"{num(rss['drift'], '+.1f')} MiB), max {num(rss['max'], '.0f')}")
  if rss["floors"]:
    lines.append(f"server RSS just before each publish: {rss['floors'][0]:.0f} ... "
                 f"{rss['floors'][-1]:.0f} MiB (drift {num(rss['floor_drift'], '+.1f')} MiB with "
                 f"{spec.num_versions} versions loaded; {num(rss['floor_slope'], '+.2f')} MiB a "
                 "swap over the second half)")
  b = report["server_batching"]
  if b:
    lines.append(f"server batching: {b['requests']} requests in {b['batches']} batches "
                 f"({b['requests'] / max(1, b['batches']):.2f} per batch), {b['padding_rows']} "
                 f"padding rows; requests per batch {b['batch_sizes']}")
  return "\n".join(lines)


def _command(spec) -> str:
  return (f".venv/bin/python bench/serving_soak.py --minutes={spec.seconds / 60:g} "
          f"--swap_seconds={spec.swap_seconds:g} --clients={spec.clients} --ahead={spec.ahead} "
          f"--num_versions={spec.num_versions} --blocks={spec.blocks} "
          f"--channels={spec.channels}")


def _plot(report: dict, path: str) -> None:
  """The server's RSS over the soak, each published version marked."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(8, 3.5))
  times = [t for t, _ in report["rss_samples"]]
  ax.plot(times, [v for _, v in report["rss_samples"]], lw=1.2, label="server RSS")
  for i, (version, at) in enumerate(report["published_at"]):
    ax.axvline(at, color="0.75", lw=0.8, zorder=0, label="version published" if i == 0 else None)
  ax.set_xlabel("seconds since the clients started")
  ax.set_ylabel("MiB")
  spec = report["spec"]
  ax.set_title(f"Soak: {spec['clients']} clients, a version every {spec['swap_seconds']:g} s; "
               f"{report['errors']} errors, {report['wrong_answers']} wrong answers", fontsize=10)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
