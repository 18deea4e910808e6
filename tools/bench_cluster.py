"""``make bench-cluster``: batch scoring from Parquet, in samples/s, for the in-process Predictor,
``gru-predict --engine local``, Ray (1 and 2 workers) and Spark (1 and 2 workers), both layouts;
ratios against the in-process Predictor, each engine's start-up cost.
Writes bench-results/cluster.{json,md}.

Usage: python tools/bench_cluster.py [MODEL_DIR] [--rows 1000000] [--files 16] [--layouts nested,long]
                                     [--engines local:2,ray:1,ray:2,spark:1,spark:2] [--repeat 2] [--data-dir DIR]
Engines whose package is missing (pip install -e '.[ray,spark]') or Spark without java are skipped
with a note. The Parquet input is written once into --data-dir (default: a folder in the system
temp dir) and reused by later runs with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "exported"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--layouts", default="nested,long")
    ap.add_argument("--engines", default="local:2,ray:1,ray:2,spark:1,spark:2")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration, interleaved; the best is kept")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "gru-bench-cluster"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)

    from benchmarks.cluster import (bench_engine, bench_in_memory, bench_in_process, format_markdown,
                                             write_dataset)
    from pipeline.runtime import Predictor
    from pipeline.runtime.predictor import usable_cpus

    pred = Predictor.load(args.model_dir)
    T = int(pred.manifest.get("timesteps_trained") or 50)
    F = pred.n_features
    data, out = Path(args.data_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engines, notes = [], []
    for item in args.engines.split(","):
        name, _, workers = item.partition(":")
        if name == "ray" and find_spec("ray") is None:
            notes.append("ray skipped: pip install -e '.[ray]'")
            continue
        if name == "spark":
            from pipeline.runtime.batch.spark_engine import java_available

            if find_spec("pyspark") is None or java_available():
                notes.append(f"spark skipped: {java_available() or 'pip install -e .[spark]'}")
                continue
        engines.append((name, int(workers or 2)))
    result = {"rows": args.rows, "T": T, "F": F, "files": args.files, "cpus": usable_cpus(), "repeat": args.repeat,
              "load": " ".join(f"{v:.1f}" for v in os.getloadavg()), "in_process": {}, "rows_table": [],
              "notes": notes}
    n_mem = min(args.rows, 200_000)
    result["in_memory_samples_per_s"] = max(bench_in_memory(args.model_dir, n_mem, T, F) for _ in range(args.repeat))
    print(f"in-memory predict_proba ({n_mem:,} rows): {result['in_memory_samples_per_s']:,.0f} samples/s", flush=True)
    for layout in args.layouts.split(","):
        print(f"writing {args.rows:,} sequences ({layout}) to {data / layout} (reused when present) ...", flush=True)
        folder = write_dataset(data / layout, args.rows, T, F, args.files, layout)
        best: dict = {}
        for rep in range(args.repeat):  # interleaved: a busy moment of the machine hits every configuration alike
            r = bench_in_process(args.model_dir, folder, layout)
            print(f"{layout} run {rep + 1}: in-process Predictor {r['samples_per_s']:,.0f} samples/s", flush=True)
            if r["samples_per_s"] > best.get("in-process", {}).get("samples_per_s", 0):
                best["in-process"] = r
            for name, workers in engines:
                r = bench_engine(args.model_dir, folder, data / f"out-{layout}-{name}-{workers}", name, workers)
                if r["rows"] != args.rows:
                    raise SystemExit(f"{name} scored {r['rows']} rows, expected {args.rows}")
                print(f"{layout} run {rep + 1}: {name} x{workers}: {r['samples_per_s']:,.0f} samples/s while scoring, "
                      f"start-up {r['startup_seconds']:.1f} s, process {r['process_seconds']:.1f} s", flush=True)
                if r["samples_per_s"] > best.get((name, workers), {}).get("samples_per_s", 0):
                    best[(name, workers)] = r
        result["in_process"][layout] = best["in-process"]
        result["rows_table"].append({"layout": layout, "engine": "in-process Predictor", **best["in-process"]})
        result["rows_table"] += [{"layout": layout, **best[e]} for e in engines]
    md = format_markdown(result) + "".join(f"\n{n}" for n in notes)
    (out / "cluster.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "cluster.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
