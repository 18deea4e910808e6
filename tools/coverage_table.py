"""Native GRU coverage table: ``python tools/coverage_table.py [--update-readme] [--no-latency]``.

Builds each configuration of ``pipeline.verification.coverage.CASES`` (tiny random-weight Keras models,
the same as tests/build/test_native_coverage.py), exports it with the native exporter, and
prints configuration | ONNX ops | max abs error as Markdown; then the batch-1 latency of the
default-size model (GRU(64), T=50, F=8), native GRU graph vs tf2onnx Loop graph.
Imports: pipeline.verification.coverage (TensorFlow/Keras through it). Reads: README.md.
Writes: with --update-readme, only the region between the native-gru markers of README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.benchmarks.native_vs_loop import latency_native_vs_tf2onnx  # noqa: E402
from pipeline.verification import coverage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update-readme", action="store_true", help="rewrite the native-gru region of README.md")
    p.add_argument("--no-latency", action="store_true", help="skip the native vs tf2onnx latency comparison")
    p.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds (default 15)")
    args = p.parse_args(argv)

    results = []
    for case in coverage.CASES:
        result = coverage.measure_case(case)
        results.append(result)
        print(f"  {result.max_abs:.2g}  {case.name}", file=sys.stderr, flush=True)
    print(coverage.markdown_table(results))
    latency = None
    if not args.no_latency:
        latency = latency_native_vs_tf2onnx(rounds=args.rounds)
        print()
        for key, value in latency.items():
            print(f"{key}: {value:.4g}")
    failed = [r.name for r in results if not r.max_abs <= 1e-5 or r.has_loop]
    if args.update_readme:
        readme = ROOT / "README.md"
        readme.write_text(coverage.replace_readme_region(readme.read_text(encoding="utf-8"),
                                                         coverage.readme_section(results, latency)),
                          encoding="utf-8")
        print(f"updated {readme}", file=sys.stderr)
    if failed:
        print(f"over tolerance or not native: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
