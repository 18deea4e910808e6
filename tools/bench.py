"""``make bench``: batch throughput of our runtime vs Keras, tf.function and the tf2onnx graph,
the fp32 matmul roof, and the streaming benchmark. Writes bench-results/bench.{json,md}.

Usage: python tools/bench.py [MODEL_DIR] [--batches 1,64,1024,8192] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "exported"))
    ap.add_argument("--batches", default="1,64,1024,8192")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny run (for tests): short timings, no stream bench")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)

    from pipeline.build.bench import bench_batches, format_markdown, matmul_roof_gflops, model_flops_per_sample, rows_as_dicts
    from pipeline.runtime import Predictor

    batches = [int(b) for b in args.batches.split(",")]
    pred = Predictor.load(args.model_dir)
    T = int(pred.manifest.get("timesteps_trained") or 50)
    H = int(pred.manifest["config"]["model"]["units"])
    roof = matmul_roof_gflops(512 if args.quick else 2048)
    roof_sps = roof * 1e9 / model_flops_per_sample(T, pred.n_features, H)
    print(f"fp32 matmul roof {roof:.0f} GFLOP/s = {roof_sps:,.0f} samples/s for this model")
    rows = bench_batches(Path(args.model_dir), batches, rounds=1 if args.quick else args.rounds,
                         min_seconds=0.01 if args.quick else 0.2)
    table = format_markdown(rows, roof_sps)
    stream_md, stream_rows = "", []
    if not args.quick and pred.manifest.get("stream", {}).get("supported"):
        from pipeline.runtime.stream_bench import bench_stream, format_results

        stream_rows = bench_stream(pred)
        stream_md = format_results(stream_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = f"# Benchmark ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)\n\nThroughput, samples/s (median of interleaved rounds)\n\n{table}\n"
    if stream_md:
        md += f"\n## Streaming\n\n{stream_md}\n"
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps({"roof_gflops": roof, "roof_samples_per_s": roof_sps,
                                                "batch": rows_as_dicts(rows), "stream": stream_rows}, indent=2))
    print(md)
    bad = [r for r in rows if r.max_abs_err_vs_keras > 1e-5]
    if bad:
        print(f"error: {len(bad)} engine/batch results differ from Keras by more than 1e-5", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
