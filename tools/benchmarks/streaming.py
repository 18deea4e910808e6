"""Streaming benchmark: per-step cost of ``Stream.push`` versus recomputing a whole window.

Owns: the measurements behind ``tools/bench_stream.py``. Imports: numpy, the TF-free runtime.
Reads: an exported folder with a stream graph. Writes: nothing.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

__all__ = ["bench_stream", "format_results"]


def _per_push_us(push, steps: np.ndarray, n: int) -> tuple[float, float]:
    """Median and 99th percentile of n individually timed pushes (after a warm-up), in us."""
    for _ in range(min(200, n)):
        push(steps)
    clock = time.perf_counter_ns
    t = np.empty(n, np.int64)
    for i in range(n):
        t0 = clock()
        push(steps)
        t[i] = clock() - t0
    return float(np.median(t)) / 1e3, float(np.percentile(t, 99)) / 1e3


def bench_stream(predictor, window: int = 50, n_single: int = 20000, batches=(64, 1024),
                 n_batched: Optional[int] = None, n_window: int = 300, seed: int = 0) -> list[dict]:
    """Rows of {"mode", "streams", "median_us", "p99_us", "steps_per_s"} (a step = one timestep of one stream)."""
    rng = np.random.default_rng(seed)
    F = predictor.n_features
    rows = []
    with predictor.stream() as s:
        med, p99 = _per_push_us(s.push, rng.standard_normal((1, F)).astype(np.float32), n_single)
        rows.append({"mode": "stream push, 1 step", "streams": 1, "median_us": med, "p99_us": p99,
                     "steps_per_s": 1e6 / med})
    for b in batches:
        n = n_batched or max(50, 200000 // b)
        with predictor.stream(n_streams=b) as s:
            med, p99 = _per_push_us(s.push, rng.standard_normal((b, 1, F)).astype(np.float32), n)
        rows.append({"mode": "stream push, 1 step", "streams": b, "median_us": med, "p99_us": p99,
                     "steps_per_s": b * 1e6 / med})
    for b in (1,) + tuple(x for x in batches if x <= 64):
        X = rng.standard_normal((b, window, F)).astype(np.float32)
        med, p99 = _per_push_us(predictor.predict_proba, X, n_window)
        rows.append({"mode": f"predict_proba on last {window} steps", "streams": b, "median_us": med,
                     "p99_us": p99, "steps_per_s": b * 1e6 / med})
    return rows


def format_results(rows: list[dict]) -> str:
    """A Markdown table, with the speed-up of streaming over window recompute per batch size."""
    base = {r["streams"]: r["median_us"] for r in rows if r["mode"].startswith("predict_proba")}
    lines = ["| mode | streams | median us/push | p99 us/push | steps/s | vs window recompute |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = ""
        if r["mode"].startswith("stream") and r["streams"] in base:
            speed = f"{base[r['streams']] / r['median_us']:.0f}x faster"
        lines.append(f"| {r['mode']} | {r['streams']} | {r['median_us']:.1f} | {r['p99_us']:.1f} | "
                     f"{r['steps_per_s']:,.0f} | {speed} |")
    return "\n".join(lines)
