"""Helpers for the Parquet and batch tests: write sequences in the nested and long layouts,
read a job's output, run gru-predict in a subprocess. Not a test module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported"


def ragged(n: int, F: int, lo: int = 3, hi: int = 12, seed: int = 0) -> list:
    """n sequences (T_i, F) float32 with T_i in [lo, hi]."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi + 1)), F)).astype(np.float32) for _ in range(n)]


def nested_table(seqs, ids) -> pa.Table:
    """id, x list<list<float32>> from a list of (T_i, F) arrays (fast, no Python per value)."""
    F = seqs[0].shape[1] if len(seqs) else 1
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    values = np.concatenate([s.reshape(-1) for s in seqs]).astype(np.float32) if len(seqs) else np.zeros(0, np.float32)
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, int(lengths.sum()) * F + 1, F, dtype=np.int32)),
                                     pa.array(values))
    outer = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), inner)
    return pa.table({"id": pa.array(ids), "x": outer})


def long_table(seqs, ids, shuffle_seed=None) -> pa.Table:
    """sample_id, t, f0..f{F-1}: one row per timestep (optionally shuffled)."""
    F = seqs[0].shape[1]
    sid = np.repeat(np.asarray(ids), [len(s) for s in seqs])
    t = np.concatenate([np.arange(len(s)) for s in seqs])
    vals = np.concatenate(seqs)
    order = np.arange(len(t)) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(len(t))
    cols = {"sample_id": pa.array(sid[order]), "t": pa.array(t[order].astype(np.int32))}
    cols.update({f"f{j}": pa.array(vals[order, j]) for j in range(F)})
    return pa.table(cols)


def write_files(folder: Path, table: pa.Table, files: int, row_group_size: int = 1024) -> Path:
    """Split ``table`` into ``files`` Parquet files in ``folder`` (rows kept in order)."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-table.num_rows // files)
    for k in range(files):
        pq.write_table(table.slice(k * per, per), folder / f"part{k:03d}.parquet", row_group_size=row_group_size)
    return folder


def write_long_files(folder: Path, seqs, ids, files: int, shuffle_seed=None) -> Path:
    """Long layout in ``files`` files, each holding whole sequences (their rows shuffled when asked)."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(seqs) // files)
    for k in range(files):
        a = k * per
        pq.write_table(long_table(seqs[a:a + per], list(ids[a:a + per]), shuffle_seed), folder / f"part{k:03d}.parquet")
    return folder


def read_output(out: Path) -> tuple[pa.Table, pa.Table, dict]:
    """(scored rows of all parts, refused rows of _errors, summary) of a job's output directory."""
    scored = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    errs = sorted((out / "_errors").glob("part-*.parquet"))
    refused = pa.concat_tables([pq.read_table(p) for p in errs]) if errs else None
    summary = json.loads((out / "_summary.json").read_text()) if (out / "_summary.json").exists() else {}
    return scored, refused, summary


def as_map(scored: pa.Table) -> dict:
    ids = scored.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id appears twice in the output"
    return dict(zip(ids, scored.column("probability").to_numpy()))


def run_predict(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.runtime.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``."""
    children: dict = {}
    cmd: dict = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd[int(d)] = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append((c, cmd.get(c, "")))
            todo.append(c)
    return out


def reference_input(folder: Path, n: int, files: int, row_group_size: int, seed: int) -> tuple[np.ndarray, Path]:
    """n reference-shaped sequences X (n, T=50, F=8) written as nested Parquet into ``files`` files."""
    X = np.random.default_rng(seed).standard_normal((n, 50, 8)).astype(np.float32)  # (n, T, F)
    return X, write_files(folder, nested_table(list(X), np.arange(n)), files, row_group_size)
