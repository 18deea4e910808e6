"""The benchmark runs end to end on a tiny setting and checks every engine against Keras."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_run_writes_results(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--batches", "1,3",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    engines = {r["engine"] for r in data["batch"]}
    assert len(engines) == 4 and {r["batch"] for r in data["batch"]} == {1, 3}
    assert all(r["max_abs_err_vs_keras"] <= 1e-5 and r["samples_per_s"] > 0 for r in data["batch"])
    assert "ours / best other" in (tmp_path / "bench.md").read_text()
