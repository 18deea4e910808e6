"""``make bench``: our runtime vs Keras, tf.function, the tf2onnx graph, OpenVINO and LiteRT;
the fp32 matmul roof, cold start and peak memory vs TensorFlow, installed size, the streaming
benchmark, and the issue's targets as PASS/MISS. Writes bench-results/bench.{json,md,png}.

Usage: python tools/bench.py [MODEL_DIR] [--batches 1,64,1024,8192] [--rounds 5] [--cold-runs 5] [--quick]
Peers whose package is missing (pip install -e '.[bench]') are skipped with a note.
Exit code 1 if any engine differs from Keras by more than 1e-5 (a missed target is not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MAX_ERR = 1e-5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "exported"))
    ap.add_argument("--batches", default="1,64,1024,8192")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=5, help="new processes per side for the cold start")
    ap.add_argument("--quick", action="store_true",
                    help="tiny run (for tests): short timings, 1 cold-start run without warm-up, no stream bench")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)

    from benchmarks.throughput import (OURS, bench_batches, keras_rebuild, matmul_roof_gflops, model_flops_per_sample,
                                      rows_as_dicts)
    from benchmarks.peers import available_peers
    from benchmarks.summary import format_markdown, plot_throughput, summarize, target_checks
    from benchmarks.startup import cold_start, install_sizes

    load_before = os.getloadavg()  # the machine may be shared: the load says how much the numbers can be trusted
    model_dir = Path(args.model_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    rebuilt = keras_rebuild(model_dir)
    model, pred = rebuilt
    T = int(pred.manifest.get("timesteps_trained") or 50)
    H = int(pred.manifest["config"]["model"]["units"])
    roof_n = 512 if args.quick else 2048
    roof = matmul_roof_gflops(roof_n)
    min_seconds = 0.01 if args.quick else 0.2
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        peers, skipped = available_peers(model, model_dir / "model.onnx", T, pred.n_features, Path(tmp),
                                         calib_seconds=min_seconds)
        rows = bench_batches(model_dir, batches, rounds=1 if args.quick else args.rounds,
                             min_seconds=min_seconds, peers=peers, rebuilt=rebuilt)
    roof = max(roof, matmul_roof_gflops(roof_n))  # measured before and after: the best of a noisy machine
    roof_sps = roof * 1e9 / model_flops_per_sample(T, pred.n_features, H)
    print(f"fp32 matmul roof {roof:.0f} GFLOP/s = {roof_sps:,.0f} samples/s for this model")
    summary = summarize(rows, roof_sps)
    for b, s in summary["per_batch"].items():
        print(f"B={b:5d}: ours {s['ours_samples_per_s']:,.0f} samples/s = {s['ours_over_best_peer']:.2f}x best peer "
              f"({s['best_peer']} {s['best_peer_samples_per_s']:,.0f}); "
              f"latency {s['ours_latency_over_best_peer']:.2f}x; "
              f"{s['ours_roof_fraction']:.0%} of roof"
              + (f"; unfused {s['unfused_samples_per_s']:,.0f} = {s['unfused_over_best_peer']:.2f}x, "
                 f"latency {s['unfused_latency_over_best_peer']:.2f}x" if "unfused_samples_per_s" in s else ""))

    print("cold start (new process, one sample):")
    cold = cold_start(model_dir, rebuilt, runs=1 if args.quick else args.cold_runs, warmup=not args.quick)
    sizes = install_sizes(ROOT / "pyproject.toml")
    print(f"installed size: runtime {sizes['runtime']['mb']:,.0f} MB, build {sizes['build']['mb']:,.0f} MB")
    checks = target_checks(summary, cold)
    plot_note = plot_throughput(rows, roof_sps, out / "bench.png") or ""
    if plot_note:
        print(f"note: {plot_note}")

    stream_md, stream_rows = "", []
    if not args.quick and pred.manifest.get("stream", {}).get("supported"):
        from benchmarks.streaming import bench_stream, format_results, rows_roof

        stream_rows = rows_roof(bench_stream(pred), roof, pred)  # the kernel and stream.onnx side by side
        stream_md = format_results(stream_rows)
    peers_ran = [p.name for p in peers]
    load_after = os.getloadavg()
    load_note = (f"Load average (1, 5, 15 min) at the start {', '.join(f'{v:.2f}' for v in load_before)}, "
                 f"at the end {', '.join(f'{v:.2f}' for v in load_after)} ({os.cpu_count()} CPUs; "
                 "above the CPU count, other work shared the machine during the run).\n\n")
    md = (f"# Benchmark ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)\n\n" + load_note
          + format_markdown(rows, roof, roof_sps, summary, peers_ran, skipped, checks, cold, sizes, plot_note) + "\n")
    if not plot_note:
        md += "\n![throughput vs batch size](bench.png)\n"
    if stream_md:
        md += f"\n## Streaming\n\n{stream_md}\n"
    (out / "bench.md").write_text(md)
    batch_rows = rows_as_dicts(rows)
    for r in batch_rows:
        r["roof_fraction"] = summary["roof_fraction"][r["engine"]][r["batch"]]
    (out / "bench.json").write_text(json.dumps({
        "cpus": os.cpu_count(), "load_average": {"start": load_before, "end": load_after}, "roof_gflops": roof, "roof_samples_per_s": roof_sps, "ours": OURS,
        "peers": {"ran": peers_ran, "skipped": skipped, "info": {p.name: p.info for p in peers}},
        "batch": batch_rows, "per_batch": summary["per_batch"], "roof_fraction": summary["roof_fraction"],
        "cold_start": cold, "install_size": sizes, "targets": checks,
        "plot": None if plot_note else "bench.png", "stream": stream_rows}, indent=2, default=str))
    print(md)
    print("targets:")
    for c in checks:
        print(f"  {c['status']:4s}  {c['target']}: {c['value']}")
    bad = [r for r in rows if r.max_abs_err_vs_keras > MAX_ERR]
    if bad:
        print(f"error: {len(bad)} engine/batch results differ from Keras by more than {MAX_ERR:g}: "
              + ", ".join(f"{r.engine} B={r.batch} ({r.max_abs_err_vs_keras:.1e})" for r in bad), file=sys.stderr)
        return 1
    if cold["abs_diff_probability"] > MAX_ERR:
        print(f"error: cold-start probabilities differ by {cold['abs_diff_probability']:.1e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
