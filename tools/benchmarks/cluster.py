"""Cluster benchmark: samples/s from Parquet for the in-process Predictor and each batch engine.

Owns: writing the benchmark's Parquet input (nested and long layouts, random reference-shaped
sequences), timing the in-process Predictor on it (pyarrow read + decode + predict_proba in
one process), timing ``gru-predict --engine local|ray|spark --workers N`` in NEW processes (as a
user runs them), the start-up cost of each engine (a 1-row job), and the markdown table.
Imports: numpy, pyarrow, pipeline.parquet_io, pipeline.runtime (the engines run in children).
Reads: an exported folder. Writes: the Parquet input and the jobs' outputs under ``work_dir``.

Each job is timed from its summary: samples/s while scoring = N / (the last fragment's end - the
first fragment's start), and start-up = the process launch -> the first fragment's start (the
interpreter, the engine, its workers and their Predictors). The ratio against the in-process
Predictor uses the former; start-up is its own column. Every configuration runs ``repeat`` times,
interleaved with the others, and the best run is kept (the machine is shared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import parquet_io

__all__ = ["write_dataset", "bench_in_process", "bench_in_memory", "bench_engine", "format_markdown"]


def _nested(X: np.ndarray, ids: np.ndarray) -> pa.Table:
    n, T, F = X.shape
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, n * T * F + 1, F, dtype=np.int32)), pa.array(X.reshape(-1)))
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, n * T + 1, T, dtype=np.int32)), inner)
    return pa.table({"id": pa.array(ids), "x": outer})


def _long(X: np.ndarray, ids: np.ndarray) -> pa.Table:
    n, T, F = X.shape
    flat = X.reshape(n * T, F)
    cols = {"sample_id": pa.array(np.repeat(ids, T)), "t": pa.array(np.tile(np.arange(T, dtype=np.int32), n))}
    cols.update({f"f{j}": pa.array(flat[:, j]) for j in range(F)})
    return pa.table(cols)


def write_dataset(folder: Path, n: int, T: int, F: int, files: int, layout: str, seed: int = 0) -> Path:
    """``n`` random sequences (T, F) in ``files`` Parquet files; reused when already written alike."""
    meta = {"n": n, "T": T, "F": F, "files": files, "layout": layout, "seed": seed}
    stamp = folder / "_bench.json"
    if stamp.exists() and json.loads(stamp.read_text()) == meta:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per = -(-n // files)
    for k in range(files):
        a, b = k * per, min(n, (k + 1) * per)
        X = rng.standard_normal((b - a, T, F), dtype=np.float32)  # (rows, time, features)
        ids = np.arange(a, b, dtype=np.int64)
        table = _nested(X, ids) if layout == "nested" else _long(X, ids)
        pq.write_table(table, folder / f"part{k:04d}.parquet", row_group_size=16384 if layout == "nested" else 1 << 20)
    stamp.write_text(json.dumps(meta))
    return folder


def bench_in_memory(model_dir: str, n: int, T: int, F: int, seed: int = 1) -> float:
    """samples/s of ``Predictor.predict_proba`` on an in-memory (n, T, F) array (no Parquet)."""
    from pipeline.runtime import Predictor

    p = Predictor.load(model_dir)
    X = np.random.default_rng(seed).standard_normal((n, T, F), dtype=np.float32)
    p.predict_proba(X[: min(n, 4096)])  # warm-up
    t0 = time.perf_counter()
    p.predict_proba(X)
    return n / (time.perf_counter() - t0)


def bench_in_process(model_dir: str, folder: Path, layout: str) -> dict:
    """The in-process Predictor from Parquet: read each file with pyarrow, decode, predict_proba."""
    from pipeline.runtime import Predictor

    p = Predictor.load(model_dir)
    files = sorted(folder.glob("*.parquet"))
    id_col = parquet_io.default_id_column(layout)
    t0 = time.perf_counter()
    n = 0
    for f in files:
        table = pq.read_table(f)
        dec = parquet_io.decode(table, layout, id_col, n_features=p.n_features)
        for _, X in dec.groups(1 << 30):
            n += len(p.predict_proba(X))
    seconds = time.perf_counter() - t0
    return {"rows": n, "seconds": seconds, "samples_per_s": n / seconds}


def bench_engine(model_dir: str, folder: Path, out: Path, engine: str, workers: int,
                 env: Optional[dict] = None) -> dict:
    """``gru-predict MODEL folder --output out --engine E --workers N`` in a new process."""
    shutil.rmtree(out, ignore_errors=True)
    launched, t0 = time.time(), time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pipeline.runtime.cli", model_dir, str(folder), "--output", str(out),
                          "--engine", engine, "--workers", str(workers)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=3600)
    process = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"gru-predict --engine {engine} failed: {res.stderr.strip().splitlines()[-1:]}")
    s = json.loads((out / "_summary.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"engine": engine, "workers": workers, "rows": s["rows_out"], "process_seconds": process,
            "startup_seconds": s["started_epoch"] + s["first_fragment_after_seconds"] - launched,
            "engine_start_seconds": s["engine_start_seconds"], "scoring_seconds": s["scoring_seconds"],
            "samples_per_s": s["rows_out"] / s["scoring_seconds"], "workers_seen": len(s["workers_seen"])}


def format_markdown(result: dict) -> str:
    """The benchmark table (and its context) as markdown."""
    mem = result["in_memory_samples_per_s"]
    lines = [f"Input: {result['rows']:,} sequences, T={result['T']}, F={result['F']}, {result['files']} Parquet files "
             f"per layout; machine: {result['cpus']} CPUs, load average {result['load']} at start; best of "
             f"{result['repeat']} interleaved runs.",
             f"In-memory `Predictor.predict_proba` on one (N, T, F) array (no Parquet): {mem:,.0f} samples/s.", "",
             "| layout | engine | workers | samples/s while scoring | vs in-process Predictor | vs in-memory "
             "predict_proba | start-up s | of which engine start s | whole process s | samples/s whole process |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows_table"]:
        base = result["in_process"][r["layout"]]["samples_per_s"]
        if r["engine"] == "in-process Predictor":
            lines.append(f"| {r['layout']} | in-process Predictor (pyarrow read + decode + predict_proba) | 2 threads | "
                         f"{r['samples_per_s']:,.0f} | 1.00 | {r['samples_per_s'] / mem:.2f} | - | - | "
                         f"{r['seconds']:.1f} (the loop) | - |")
            continue
        lines.append(f"| {r['layout']} | gru-predict --engine {r['engine']} | {r['workers']} | "
                     f"{r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f} | {r['samples_per_s'] / mem:.2f} | "
                     f"{r['startup_seconds']:.1f} | {r['engine_start_seconds']:.1f} | {r['process_seconds']:.1f} | "
                     f"{r['rows'] / r['process_seconds']:,.0f} |")
    return "\n".join(lines) + "\n"
