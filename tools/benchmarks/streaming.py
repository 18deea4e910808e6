"""Streaming benchmark: per-step cost of ``Stream.push`` (the fused kernel and stream.onnx side by side)
versus recomputing a whole window.

Owns: the measurements behind ``tools/bench_stream.py`` and the streaming rows of ``make bench``.
Imports: numpy, the TF-free runtime.
Reads: an exported folder with a stream graph. Writes: nothing.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

__all__ = ["bench_stream", "format_results", "rows_roof"]


def _per_push_us(push, steps: np.ndarray, n: int) -> tuple[float, float]:
    """Median and 99th percentile of n individually timed pushes (after a warm-up), in us."""
    t = _push_times_ns(push, steps, n)
    return float(np.median(t)) / 1e3, float(np.percentile(t, 99)) / 1e3


def _flops_per_step(predictor) -> Optional[float]:
    """FLOPs of one timestep of one stream (the GRU layers' products; model_flops_per_sample / T)."""
    fused_kernel = predictor._fused()
    if fused_kernel is None:
        return None
    F, flops = predictor.n_features, 0.0
    for layer in fused_kernel.spec.layers:
        flops += 2.0 * 3 * layer.hidden * (F + layer.hidden) * layer.directions
        F = layer.hidden * layer.directions
    return flops


def bench_stream(predictor, window: int = 50, n_single: int = 20000, batches=(64, 1000, 1024),
                 n_batched: Optional[int] = None, n_window: int = 300, seed: int = 0, rounds: int = 3) -> list[dict]:
    """Rows of {"mode", "backend", "streams", "median_us", "p99_us", "steps_per_s", "vs_stream_onnx",
    "roof_fraction"} (a step = one timestep of one stream).

    Each stream size runs both backends side by side: the fused kernel (``Stream`` by default, when the
    Predictor runs it) and stream.onnx on onnxruntime (``Stream.open(p, n, fused=False)``), alternated
    over ``rounds`` rounds; the median is over every timed push of a backend, and "vs_stream_onnx" is
    stream.onnx's median over the kernel's. "roof_fraction" is None here: ``rows_roof`` sets it from a
    roof measured after the rows (steps/s over the sgemm roof's steps/s)."""
    from pipeline.runtime.stream import Stream

    rng = np.random.default_rng(seed)
    F = predictor.n_features
    rows = []
    for b in (1,) + tuple(batches):
        n = n_single // rounds if b == 1 else (n_batched or max(50, 200000 // b)) // rounds
        steps = rng.standard_normal((1, F) if b == 1 else (b, 1, F)).astype(np.float32)
        streams = {"kernel": Stream.open(predictor, None if b == 1 else b),
                   "stream.onnx": Stream.open(predictor, None if b == 1 else b, fused=False)}
        if not streams["kernel"].backend.startswith("fused"):
            streams.pop("kernel").close()  # the kernel does not run this model: stream.onnx alone
        times: dict[str, list] = {k: [] for k in streams}
        for r in range(rounds):
            for name in (list(streams) if r % 2 == 0 else list(streams)[::-1]):
                times[name].append(_push_times_ns(streams[name].push, steps, n))
        for s in streams.values():
            s.close()
        med = {k: float(np.median(np.concatenate(v))) / 1e3 for k, v in times.items()}
        for name, v in times.items():
            sps = b * 1e6 / med[name]
            rows.append({"mode": "stream push, 1 step", "backend": name, "streams": b, "median_us": med[name],
                         "p99_us": float(np.percentile(np.concatenate(v), 99)) / 1e3, "steps_per_s": sps,
                         "vs_stream_onnx": med["stream.onnx"] / med[name] if name == "kernel" else None,
                         "roof_fraction": None})
    for b in (1,) + tuple(x for x in batches if x <= 64):
        X = rng.standard_normal((b, window, F)).astype(np.float32)
        med, p99 = _per_push_us(predictor.predict_proba, X, n_window)
        rows.append({"mode": f"predict_proba on last {window} steps", "backend": "predict_proba", "streams": b,
                     "median_us": med, "p99_us": p99, "steps_per_s": b * 1e6 / med, "vs_stream_onnx": None,
                     "roof_fraction": None})
    return rows


def rows_roof(rows: list[dict], roof_gflops: float, predictor) -> list[dict]:
    """``rows`` with "roof_fraction" set from a roof measured after them (steps/s x FLOPs per step / roof)."""
    per_step = _flops_per_step(predictor)
    return [dict(r, roof_fraction=r["steps_per_s"] * per_step / (roof_gflops * 1e9)
                 if per_step and r["mode"].startswith("stream") else None) for r in rows]


def _push_times_ns(push, steps: np.ndarray, n: int) -> np.ndarray:
    """n individually timed pushes (after a warm-up), in ns."""
    for _ in range(min(200, n)):
        push(steps)
    clock = time.perf_counter_ns
    t = np.empty(n, np.int64)
    for i in range(n):
        t0 = clock()
        push(steps)
        t[i] = clock() - t0
    return t


def format_results(rows: list[dict]) -> str:
    """A Markdown table: per stream count the kernel and stream.onnx side by side, the kernel's speed-up
    over stream.onnx, its share of the sgemm roof, and streaming's speed-up over window recompute."""
    base = {r["streams"]: r["median_us"] for r in rows if r["mode"].startswith("predict_proba")}
    lines = ["| mode | backend | streams | median us/push | p99 us/push | steps/s | kernel / stream.onnx | "
             "of sgemm roof | vs window recompute |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = ""
        if r["mode"].startswith("stream") and r["streams"] in base:
            speed = f"{base[r['streams']] / r['median_us']:.0f}x faster"
        ratio = f"{r['vs_stream_onnx']:.2f}x" if r.get("vs_stream_onnx") else ""
        roof = f"{r['roof_fraction']:.0%}" if r.get("roof_fraction") else ""
        lines.append(f"| {r['mode']} | {r.get('backend', '')} | {r['streams']} | {r['median_us']:.1f} | "
                     f"{r['p99_us']:.1f} | {r['steps_per_s']:,.0f} | {ratio} | {roof} | {speed} |")
    return "\n".join(lines)
