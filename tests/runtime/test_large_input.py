"""gru-predict streams a large .npy through bounded memory (peak RSS well below the file size).

The file is written chunk by chunk (the test itself never holds it); gru-predict runs in a
subprocess that reports its own peak RSS (``resource.getrusage``). Run this module as a script
for the full-size measurement: ``python tests/runtime/test_large_input.py MODEL_DIR N T F``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

RUNNER = r"""
import json, resource, sys, time
t0 = time.time()
from pipeline.runtime.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.time() - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)
"""


def write_big_npy(path: Path, n: int, t: int, f: int, seed: int = 0, chunk: int = 50_000) -> int:
    """Write an (n, t, f) float32 .npy without ever holding it; returns the file size."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, t, f)})
        for start in range(0, n, chunk):
            fh.write(rng.standard_normal((min(chunk, n - start), t, f), dtype=np.float32).tobytes())
    return path.stat().st_size


def run_predict(model_dir: Path, data: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(model_dir), str(data), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["rc"] == 0, proc.stderr
    return stats


@pytest.mark.slow
def test_large_npy_bounded_memory(tmp_path, tiny_model_factory):
    model_dir = tiny_model_factory(tmp_path / "model", n_features=8)
    n, t, f = 400_000, 10, 8
    small, big = tmp_path / "small.npy", tmp_path / "big.npy"
    write_big_npy(small, 1000, t, f)
    size = write_big_npy(big, n, t, f)
    base = run_predict(model_dir, small, tmp_path / "small.csv")
    stats = run_predict(model_dir, big, tmp_path / "big.csv")
    growth = (stats["peak_rss_mib"] - base["peak_rss_mib"]) * 2**20
    print(f"\n{n} x {t} x {f} float32 = {size / 2**20:.0f} MiB: peak RSS {stats['peak_rss_mib']:.0f} MiB "
          f"(baseline {base['peak_rss_mib']:.0f} MiB, growth {growth / 2**20:.0f} MiB), {stats['seconds']:.1f} s")
    assert growth < 0.5 * size, f"peak RSS grew by {growth / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    # the output is complete, in order, and equals predict_proba on a slice
    with open(tmp_path / "big.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == n + 1 and rows[1][0] == "0" and rows[-1][0] == str(n - 1)
    from pipeline.runtime import Predictor

    X = np.load(big, mmap_mode="r")
    idx = [0, 1, 4095, 4096, 123_457, n - 1]
    want = Predictor.load(model_dir).predict_proba(np.asarray(X[idx]))
    got = np.array([float(rows[i + 1][1]) for i in idx])
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_npy_stream_equals_in_memory(tmp_path, tiny_model_factory):
    """The chunked path gives the same CSV as predicting the whole array, chunk size 1 row."""
    import io

    from pipeline.runtime import Predictor
    from pipeline.runtime.cli import predict_npy_chunked, write_rows

    model_dir = tiny_model_factory(tmp_path / "model", n_features=3)
    p = Predictor.load(model_dir)
    X = np.random.default_rng(3).standard_normal((37, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    for chunk_bytes in (1, 5 * 3 * 4 * 7, 1 << 20):
        got = io.StringIO()
        assert predict_npy_chunked(p, str(tmp_path / "x.npy"), got, chunk_bytes) == 37
        proba = p.predict_proba(X)
        want = io.StringIO()
        write_rows(want, [str(i) for i in range(37)], proba, [p.class_names[int(v >= p.threshold)] for v in proba])
        assert got.getvalue() == want.getvalue()
    X[30, 2, 1] = np.nan
    np.save(tmp_path / "bad.npy", X)
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="at sample 30, timestep 2, feature 1"):
        predict_npy_chunked(p, str(tmp_path / "bad.npy"), io.StringIO(), 5 * 3 * 4 * 7)


if __name__ == "__main__":
    import tempfile

    model_dir, n, t, f = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    with tempfile.TemporaryDirectory(dir=sys.argv[5] if len(sys.argv) > 5 else None) as tmp:
        data = Path(tmp) / "big.npy"
        size = write_big_npy(data, n, t, f)
        stats = run_predict(model_dir, data, Path(tmp) / "out.csv")
        print(json.dumps({"n": n, "t": t, "f": f, "file_mib": size / 2**20, **stats}))
