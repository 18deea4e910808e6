"""Parquet in the data-file layer: both layouts, ragged rows, refusal reasons, the missing-pyarrow hint."""

import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the parquet extra is not installed (pip install -e '.[parquet]')")
import pyarrow.parquet as pq  # noqa: E402

from pipeline import parquet_io  # noqa: E402
from pipeline.datafiles import read_sequences  # noqa: E402
from pipeline.errors import DataFormatError, InputError  # noqa: E402
from tests.runtime.parquet_data import EXPORTED, ROOT, long_table, nested_table, ragged  # noqa: E402


def test_nested_and_long_read_the_same_ragged_sequences(tmp_path):
    seqs = ragged(7, 3)
    ids = [f"s{i}" for i in range(7)]
    pq.write_table(nested_table(seqs, ids), tmp_path / "n.parquet")
    pq.write_table(long_table(seqs, ids, shuffle_seed=1).append_column("label", pa.array([1] * sum(map(len, seqs)))),
                   tmp_path / "l.parquet")
    csv = ["sample_id,t,f0,f1,f2"] + [f"{i},{t},{','.join(repr(float(v)) for v in s[t])}"
                                     for i, s in zip(ids, seqs) for t in range(len(s))]
    (tmp_path / "c.csv").write_text("\n".join(csv) + "\n")
    nested, long_, from_csv = (read_sequences(tmp_path / n) for n in ("n.parquet", "l.parquet", "c.csv"))
    for d in (nested, long_, from_csv):
        order = np.argsort(d.ids)
        assert list(d.ids[order]) == sorted(ids)
        np.testing.assert_array_equal(d.lengths[order], [len(s) for s in seqs])
        for k, i in enumerate(order):
            np.testing.assert_array_equal(d.X[i, : d.lengths[i]], seqs[k])
            assert not d.X[i, d.lengths[i]:].any()  # right-padded with zeros
    assert long_.feature_names == ["f0", "f1", "f2"] and list(long_.y) == [1] * 7 and nested.y is None


def test_decode_routes_each_bad_row_with_its_reason():
    x = [[[1, 2, 3], [4, 5, 6]], None, [], [[1, 2, 3], [1, 2]], [[1, float("nan"), 3]], [[7, 8, 9]],
         [[1, 2, 3], None], [[1, 2, 3], [1, 2, 1e39]], [[1, 2, None]]]
    t = pa.table({"id": list(range(len(x))), "x": pa.array(x, type=pa.list_(pa.list_(pa.float64())))})
    d = parquet_io.decode_nested(t, "id", n_features=3)
    assert d.ids.to_pylist() == [0, 5] and d.steps.tolist() == [2, 1] and d.rows_in == len(x)
    reasons = dict(zip(d.bad_ids.to_pylist(), d.bad_reasons))
    assert reasons == {
        1: "x is null: expected a list of timesteps",
        2: "empty sequence: expected at least 1 timestep, got 0",
        3: "expected 3 features per timestep, got 2 at timestep 1",
        4: "expected finite values, got NaN at timestep 0, feature 1",
        6: "timestep 1 is null: expected 3 features",
        7: "expected finite values, got 1e+39, which overflows float32 at timestep 1, feature 2",
        8: "expected finite values, got a null value at timestep 0, feature 2",
    }
    groups = {X.shape[1]: (rows.tolist(), X.tolist()) for rows, X in d.groups()}  # one group per length
    assert groups == {1: ([1], [[[7, 8, 9]]]), 2: ([0], [[[1, 2, 3], [4, 5, 6]]])}


def test_long_layout_any_row_order_and_its_refusals():
    seqs = ragged(5, 2, seed=3)
    t = long_table(seqs, [10, 11, 12, 13, 14], shuffle_seed=0)
    d = parquet_io.decode_long(t, "sample_id", ["f0", "f1"])
    got = {i: None for i in d.ids.to_pylist()}
    for rows, X in d.groups():
        for r, x in zip(rows, X):
            got[d.ids[int(r)].as_py()] = x
    for i, s in zip(range(10, 15), seqs):
        np.testing.assert_array_equal(got[i], s)
    extra = pa.table({"sample_id": [20, 20, 21, None], "t": [0, 0, 0, 0], "f0": [1.0, 2.0, float("inf"), 1.0],
                      "f1": [1.0, 1.0, 1.0, 1.0]})
    d = parquet_io.decode_long(pa.concat_tables([t, extra.cast(t.schema)]), "sample_id", ["f0", "f1"])
    assert sorted(d.ids.to_pylist()) == list(range(10, 15)) and d.rows_in == 8
    reasons = dict(zip(d.bad_ids.to_pylist(), d.bad_reasons))
    assert reasons == {None: "1 row(s) with a null 'sample_id'", 20: "duplicate rows at t=0: expected one row per timestep",
                       21: "expected finite values, got inf at timestep 0, feature 'f0'"}


def test_read_sequences_refuses_bad_parquet_in_one_line(tmp_path):
    pq.write_table(pa.table({"id": [1, 2], "x": pa.array([[[1.0, 2.0]], []], type=pa.list_(pa.list_(pa.float32())))}),
                   tmp_path / "empty_row.parquet")
    with pytest.raises(DataFormatError, match="id 2: empty sequence"):
        read_sequences(tmp_path / "empty_row.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "cols.parquet")
    with pytest.raises(DataFormatError, match="cannot tell the Parquet layout"):
        read_sequences(tmp_path / "cols.parquet")
    pq.write_table(pa.table({"sample_id": [1], "t": [0], "f": ["a"]}), tmp_path / "text.parquet")
    with pytest.raises(DataFormatError, match="expected numeric 't' and feature columns, got f"):
        read_sequences(tmp_path / "text.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataFormatError, match="cannot read .* as PARQUET"):
        read_sequences(tmp_path / "junk.parquet")
    with pytest.raises(InputError, match="expected 8 feature columns, got 1"):
        parquet_io.check_schema(pa.schema([("sample_id", pa.int64()), ("t", pa.int64()), ("f", pa.float32())]),
                                "long", "sample_id", 8, "x")


def test_padding_blowup_is_refused():
    # 41 rows, one of 2^27 steps: padding would need 41x the real values (the check runs before any allocation)
    d = parquet_io.Decoded(pa.array(range(41)), np.zeros((1, 8), np.float32), np.array([1] * 40 + [1 << 27]),
                           None, pa.array([], pa.int64()), [], 41)
    with pytest.raises(InputError, match="padding 41 sequences"):
        d.padded()


def test_cli_prints_csv_for_one_parquet_file(tmp_path):
    from tests.runtime.test_properties import run_cli

    X = np.load(EXPORTED / "reference.npz")["X"][:4]
    pq.write_table(nested_table(list(X), ["a", "b", "c", "d"]), tmp_path / "in.parquet")
    rc, out, err = run_cli([EXPORTED, tmp_path / "in.parquet"])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "id,probability,label" and [row.split(",")[0] for row in lines[1:]] == ["a", "b", "c", "d"]
    from pipeline.runtime import Predictor

    np.testing.assert_allclose([float(row.split(",")[1]) for row in lines[1:]], Predictor.load(EXPORTED).predict_proba(X),
                               atol=1e-6)


def test_without_pyarrow_one_line_error_with_the_install_hint(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(nested_table(list(np.zeros((1, 2, 8), np.float32)), [1]), path)
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from pipeline.runtime.cli import main\n"
        f"sys.exit(main(['exported', {str(path)!r}]))\n"
    )
    for argv in ([], ["--output", str(tmp_path / "out")]):
        res = subprocess.run([sys.executable, "-c", code.replace("]))", f"] + {argv!r}))")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        assert "pip install 'gru-onnx-pipeline[parquet]'" in res.stderr


def test_runtime_import_does_not_load_parquet_or_engines():
    code = ("import sys, pipeline.runtime, pipeline.runtime.cli, pipeline.datafiles; "
            "print(sorted(m for m in ('pyarrow', 'ray', 'pyspark', 'pandas') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_no_import_cycle_between_datafiles_and_parquet_io():
    """parquet_io takes SequenceData, the padding guard and label parsing from pipeline.sequences:
    importing it loads no pipeline.datafiles (which imports parquet_io lazily, for .parquet files)."""
    code = ("import sys, pipeline.parquet_io; "
            "print(sorted(m for m in sys.modules if m in ('pipeline.datafiles', 'pipeline.sequences')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['pipeline.sequences']", res.stdout
    from pipeline import datafiles, sequences

    assert datafiles.SequenceData is sequences.SequenceData and datafiles.pad_sequences is sequences.pad_sequences
