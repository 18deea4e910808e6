"""Benchmark streaming inference: ``python tools/bench_stream.py [MODEL_DIR]``.

Per-step latency of one stream (median of many pushes), throughput of 64, 1000 and 1024 streams
pushed together, each on the fused kernel and on stream.onnx side by side, and the cost of
recomputing the full window with ``Predictor.predict_proba`` each step.
Uses MODEL_DIR, else ``exported/`` when it has a stream graph, else builds a small default-sized
model (64 units, F=8, T=50, 1 epoch) in a temporary folder (needs TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.runtime import Predictor  # noqa: E402
from benchmarks.streaming import bench_stream, format_results, rows_roof  # noqa: E402
from benchmarks.throughput import matmul_roof_gflops  # noqa: E402


def _model_dir(arg, tmp: str) -> Path:
    if arg:
        return Path(arg)
    default = Path(__file__).resolve().parents[1] / "exported"
    if (default / "manifest.json").is_file():
        p = Predictor.load(default)
        if p.manifest.get("stream", {}).get("supported"):
            return default
    from pipeline.training.run import run_build
    from pipeline.settings import load_config

    out = Path(tmp) / "bench-model"
    print(f"exported/ has no stream graph: building a small model in {out}", file=sys.stderr)
    cfg = {"data": {"n_samples": 300, "timesteps": 50, "features": 8}, "model": {"units": 64},
           "train": {"epochs": 1, "verbose": "0"}, "verify": {"n_random": 32, "large_batch": 64},
           "out": str(out)}
    stdout = sys.stdout
    sys.stdout = sys.stderr  # keep the build log out of the table
    try:
        run_build(load_config(None, cfg))
    finally:
        sys.stdout = stdout
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", help="exported folder with a stream graph")
    ap.add_argument("--window", type=int, default=50, help="window length recomputed by the baseline")
    ap.add_argument("--pushes", type=int, default=20000, help="timed pushes for the single stream")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = _model_dir(args.model_dir, tmp)
        p = Predictor.load(folder)  # the kernel's many-stream pushes use every CPU; stream.onnx runs 1 thread
        cfg = p.manifest["config"]["model"]
        roof = matmul_roof_gflops()  # the best of before and after: a shared machine's roof moves
        rows = bench_stream(p, window=args.window, n_single=args.pushes)
        roof = max(roof, matmul_roof_gflops())
        per_step = rows_roof(rows, roof, p)
        print(f"model {folder.name}: {cfg['layers']} GRU layer(s) x {cfg['units']} units, F={p.n_features}; "
              f"kernel {p.workers} thread(s), onnxruntime (stream.onnx) 1 thread; sgemm roof {roof:.0f} GFLOP/s; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        print(format_results(per_step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
