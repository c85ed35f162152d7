"""A soak's report (bench/soak.py): its answers, errors and wrong answers from the checker, the
swaps from what was published and answered, and the server's RSS from the samples.

RSS: `drift` is the median of the last tenth of the run minus that of the tenth after the first
swap; `floors` are the samples just before each version is published (the served versions loaded
and warm, the retired ones unloaded), whose `floor_drift` (the last minus the first with
num_versions loaded) and `floor_slope` (MiB per swap over the second half, a least-squares line)
tell a leak, which climbs at every swap, from the allocator settling.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def report(spec, checker, samples, published: list[dict], publisher_ok: bool,
           batching: dict | None, elapsed: float) -> dict:
  """The report of one soak (a SoakSpec, its _Checker and _Sampler, the publisher's records,
  whether it finished cleanly, the server's batching stats, the clients' seconds)."""
  rss = samples.rss
  times = np.array([t for t, _ in rss])
  values = np.array([v for _, v in rss])
  start = times[0] if len(times) else 0.0
  tenth = max(1.0, (times[-1] - start) / 10) if len(times) else 1.0
  first_swap = min((p["published_at"] for p in published if p["version"] > 1), default=start)

  def median_between(lo: float, hi: float) -> float | None:
    chosen = values[(times >= lo) & (times <= hi)]
    return float(np.median(chosen)) if len(chosen) else None

  early = median_between(first_swap, first_swap + tenth)
  late = median_between(times[-1] - tenth, times[-1]) if len(times) else None
  floors = [float(values[times < p["published_at"]][-1]) for p in published[1:]
            if (times < p["published_at"]).any()]
  steady = floors[spec.num_versions - 1:]   # num_versions loaded from then on
  half = steady[len(steady) // 2:]
  floor_slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else None
  retired = sorted({v for _, states in samples.states for v, s in states.items() if s == "END"})
  ms = np.array(checker.latencies) * 1000
  return {
      "spec": dataclasses.asdict(spec),
      "seconds": elapsed,
      "answers": checker.answers,
      "qps": checker.answers / elapsed if elapsed else 0.0,
      "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
      "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
      "errors": sum(checker.errors.values()),
      "errors_by_code": checker.errors,
      "error_examples": checker.error_examples,
      "wrong_answers": checker.wrong,
      "clients_ok": checker.clients_ok,
      "wrong_examples": checker.wrong_examples,
      "answers_by_version": {str(v): n for v, n in sorted(checker.by_version.items())},
      "versions_published": [p["version"] for p in published],
      "swaps_published": sum(p["version"] > 1 for p in published),
      "swaps_answered": max(0, len(checker.by_version) - 1),
      "versions_retired": retired,
      "publish_seconds": [round(p["seconds"], 2) for p in published],
      "first_answer_after_publish_seconds": {
          str(p["version"]): round(checker.first_answer[p["version"]] - p["published_at"], 2)
          for p in published if p["version"] > 1 and p["version"] in checker.first_answer},
      "publisher_ok": publisher_ok,
      "server_batching": batching,
      "rss_mb": {"first": float(values[0]) if len(values) else None,
                 "after_first_swap": early, "last_tenth": late,
                 "drift": None if early is None or late is None else late - early,
                 "max": float(values.max()) if len(values) else None,
                 "floors": [round(f, 1) for f in floors],
                 "floor_drift": steady[-1] - steady[0] if steady else None,
                 "floor_slope": floor_slope},
      "rss_samples": [[round(t - start, 1), round(v, 1)] for t, v in rss],
      "published_at": [[p["version"], round(p["published_at"] - start, 1)] for p in published],
  }
