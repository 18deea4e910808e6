"""Native GRU coverage table: ``python tools/coverage_table.py [--update-docs] [--no-latency]``.

Builds each configuration of ``CASES`` in tests/coverage_cases.py (tiny random-weight Keras models,
the same as tests/export/test_native_coverage.py), exports it with the native exporter, and prints
configuration | ONNX ops | max abs error as Markdown; then the batch-1 latency of the default-size
model (GRU(64), T=50, F=8), native GRU graph vs tf2onnx Loop graph (tools/benchmarks/native_vs_loop.py).
Owns: that table and the section around it.
Imports: coverage_cases (tests/, put on ``sys.path`` here; TensorFlow/Keras through it), benchmarks,
regions. Reads: docs/export-coverage.md with --update-docs.
Writes: with --update-docs, only the ``native-gru`` region of docs/export-coverage.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # coverage_cases: the test harness this table reports on
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import coverage_cases as coverage  # noqa: E402
from benchmarks.native_vs_loop import latency_native_vs_tf2onnx  # noqa: E402
from regions import update_doc  # noqa: E402

DOC = ROOT / "docs" / "export-coverage.md"
REGION = "native-gru"
ATOL = 1e-5


def _status(text: str) -> str:
    return text.replace("|", "/") if text.startswith("no") else "yes"


def markdown_table(results: list[coverage.CaseResult]) -> str:
    """configuration | ONNX ops | max abs error | stream | unrolled | kernel | export time."""
    lines = ["| configuration | ONNX ops | max abs error (random / order task) | stream.onnx | model_unrolled.onnx | "
             "fused kernel | export_native s |", "|---|---|---:|---|---|---|---:|"]
    for r in results:
        if r.unrolled_vs_keras is not None:
            unrolled = f"yes ({r.unrolled_vs_keras:.2g})"
        elif "GRU" not in r.ops:
            unrolled = "model.onnx is per-step"
        else:
            unrolled = "no (masked)" if coverage.case_by_name(r.name).variable_length else "no (time axis changes)"
        lines.append(f"| {r.name} | {', '.join(r.ops)} | {r.max_abs_random:.2g} / {r.max_abs_real:.2g} | "
                     f"{_status(r.stream)} | {unrolled} | {_status(r.kernel)} | {r.export_seconds:.2f} |")
    return "\n".join(lines)


def docs_section(results: list[coverage.CaseResult], latency: Optional[dict[str, float]]) -> str:
    """The Markdown placed in the native-gru region of docs/export-coverage.md."""
    worst = max(r.max_abs for r in results)
    tolerance = f"{ATOL:.0e}".replace("e-0", "e-")  # 1e-5
    parts = [
        "## Native ONNX GRU export",
        "",
        "tf2onnx turns a Keras 3 GRU into a `Loop` over time steps. `pipeline/export/native.py` instead",
        "emits the ONNX `GRU` op directly (gate order z, r, h in both; `reset_after=True` is",
        "`linear_before_reset=1`; Bidirectional is `direction=\"bidirectional\"`, go_backwards is `\"reverse\"`;",
        "Masking / `Embedding(mask_zero=True)` over right-padded rows becomes `sequence_lens`). On padded steps",
        "the graph reproduces the values Keras returns (a plain GRU repeats its last real output, Bidirectional",
        "and go_backwards give zeros), so mask-blind layers such as `GlobalMaxPooling1D` agree too. The layers around",
        "the GRUs (convolutions, pooling, normalization, Dense stacks, merges, attention) are emitted by",
        "`pipeline/export/layers.py` and `attention.py`; a GRU activation the op lacks is written step by step.",
        "Anything it cannot express exactly (custom cells, LSTM, ...) raises `UnsupportedModelError` and the build falls",
        "back to tf2onnx (`manifest[\"model\"][\"backend\"] == \"tf2onnx\"`, with `fallback_reason`), verified the same way.",
        "Left-padded input cannot be expressed by `sequence_lens`; the runtime refuses it (`InputError`) rather",
        "than answering differently from Keras (the padding rule is in [other-runtimes.md](other-runtimes.md)).",
        "",
        "Coverage (`python tools/coverage_table.py`; tiny random-weight models, one ONNX model per row run at batch",
        f"{' and '.join(map(str, coverage.BATCHES))} and T {' and '.join(map(str, coverage.TIMESTEPS))}, on random and standardized",
        f"order-task inputs; tolerance {tolerance} on probabilities, worst {worst:.2g}):",
        "",
        markdown_table(results),
        "",
        "stream.onnx / fused kernel: \"yes\", or \"no\" with the reason (also in the manifest and `Predictor.debug_info()`:",
        "streams need per-step layers only; the fused kernel covers GRU stacks with sigmoid/tanh in any direction, fixed or",
        "variable length, under the heads [kernel.md](kernel.md) lists; a masked row is read as shipped, with its lengths input).",
    ]
    if latency:
        parts += [
            "",
            "Batch-1 latency of the default-size model (GRU(64), T=50, F=8, one intra-op thread, median of",
            "interleaved rounds):",
            "",
            "| graph | ms per call |",
            "|---|---:|",
            f"| native GRU op | {latency['native GRU op ms']:.3f} |",
            f"| tf2onnx Loop | {latency['tf2onnx Loop ms']:.3f} |",
            "",
            f"The native graph is {latency['speed-up']:.1f}x faster at batch 1.",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update-docs", action="store_true",
                   help="rewrite the native-gru region of docs/export-coverage.md")
    p.add_argument("--no-latency", action="store_true", help="skip the native vs tf2onnx latency comparison")
    p.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds (default 15)")
    p.add_argument("--cases", help="comma-separated case names (default: every case); for a quick look")
    args = p.parse_args(argv)
    if args.cases and args.update_docs:
        p.error("--update-docs writes the whole table: drop --cases")
    cases = coverage.CASES if not args.cases else [coverage.case_by_name(n) for n in args.cases.split(",")]

    results = []
    for case in cases:
        result = coverage.measure_case(case)
        results.append(result)
        print(f"  {result.max_abs:.2g}  {case.name}", file=sys.stderr, flush=True)
    print(markdown_table(results))
    latency = None
    if not args.no_latency:
        latency = latency_native_vs_tf2onnx(rounds=args.rounds)
        print()
        for key, value in latency.items():
            print(f"{key}: {value:.4g}")
    failed = [r.name for r in results if not r.max_abs <= ATOL or r.has_loop]
    code = update_doc(DOC, REGION, docs_section(results, latency)) if args.update_docs else 0
    if failed:
        print(f"over tolerance or not native: {failed}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
