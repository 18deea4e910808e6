"""tools/bench_cluster.py runs end to end on a tiny setting (local engine, both layouts): every
sequence is scored, the table and JSON carry every configuration. No assertion on timings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="the parquet extra is not installed (pip install -e '.[parquet]')")
ROOT = Path(__file__).resolve().parents[2]


def test_bench_cluster_quick(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_cluster.py"), "--rows", "3000", "--files", "3",
                          "--engines", "local:2", "--repeat", "1", "--data-dir", str(tmp_path / "data"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "cluster.json").read_text())
    md = (tmp_path / "out" / "cluster.md").read_text()
    rows = [(r["layout"], r["engine"]) for r in data["rows_table"]]
    assert rows == [("nested", "in-process Predictor"), ("nested", "local"), ("long", "in-process Predictor"),
                    ("long", "local")]
    assert all(r["rows"] == 3000 for r in data["rows_table"])
    for r in data["rows_table"][1::2]:
        assert r["samples_per_s"] > 0 and r["startup_seconds"] >= 0 and r["workers_seen"] == 2
    assert md.count("| gru-predict --engine local | 2 |") == 2 and "in-process Predictor" in md
