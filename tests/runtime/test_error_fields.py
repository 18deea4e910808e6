"""Input and data errors carry where the bad input is as fields (file, line, sample, timestep, feature),
not only in their one-line text; ``without_sample()`` is the wording for a report that names the sample
itself (the batch ``_errors`` table), so no caller edits message strings."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from tiny_models import write_tiny_model

from pipeline.datafiles import read_sequences
from pipeline.errors import DataFormatError, InputError, IntegrityError
from pipeline.runtime import Predictor

F = 3  # features of the tiny models


def test_fields_default_to_none_and_survive_pickling():
    plain = InputError("X: expected at least one sample")
    assert (plain.file, plain.line, plain.sample, plain.timestep, plain.feature) == (None,) * 5
    assert plain.fields == {} and plain.without_sample() == "X: expected at least one sample"
    e = DataFormatError("d.csv:3 column 'f1': expected a number,\n got 'x'", file=Path("d.csv"), line=3,
                        sample="a", timestep=1, feature="f1")
    assert str(e) == "d.csv:3 column 'f1': expected a number, got 'x'"  # still one line
    assert e.fields == {"file": "d.csv", "line": 3, "sample": "a", "timestep": 1, "feature": "f1"}
    back = pickle.loads(pickle.dumps(e))  # engines ship errors between processes
    assert type(back) is DataFormatError and str(back) == str(e) and back.fields == e.fields
    i = pickle.loads(pickle.dumps(IntegrityError("x", field="threshold")))
    assert i.field == "threshold"


def test_non_finite_value_names_sample_timestep_feature(tiny_predictor):
    X = np.ones((4, 5, F), np.float32)
    X[2, 3, 1] = np.nan
    X[2, 4, 0] = np.inf
    X[3, 0, 0] = np.nan
    with pytest.raises(InputError) as info:
        tiny_predictor.predict_proba(X)
    e = info.value
    assert str(e) == "X: expected finite values, got nan at sample 2, timestep 3, feature 1 (3 non-finite values in all)"
    assert e.fields == {"sample": 2, "timestep": 3, "feature": 1}
    assert e.without_sample() == "X: expected finite values, got nan at timestep 3, feature 1 (2 non-finite values in this sample)"


def test_scaled_overflow_names_its_place(tiny_predictor):
    X = np.ones((2, 3, F), np.float32)
    X[1, 2, 1] = 3.0e38  # finite, but (x - mean) / std is not
    with np.errstate(over="ignore"), pytest.raises(InputError) as info:
        tiny_predictor.predict_proba(X)
    assert info.value.fields == {"sample": 1, "timestep": 2, "feature": 1}
    assert info.value.without_sample().startswith("X after standardization: expected finite values, got inf at timestep 2, feature 1")


def test_list_input_error_names_the_sequence(tiny_predictor):
    seqs = [np.ones((4, F), np.float32), np.ones((2, F + 1), np.float32)]
    with pytest.raises(InputError) as info:
        tiny_predictor.predict_proba(seqs)
    assert str(info.value) == f"X[1]: expected {F} features, got {F + 1}"
    assert info.value.fields == {"sample": 1} and info.value.without_sample() == f"expected {F} features, got {F + 1}"


def test_masked_step_error_names_sample_and_timestep(tmp_path):
    """A user's Masking(0) model given X without lengths: a mask-valued step inside a row and a row of
    padding only are refused, the error carrying the sample (and timestep) as fields."""
    p = Predictor.load(write_tiny_model(tmp_path / "user_masked", masking=True, mask_value=0.0))
    X = np.ones((3, 5, F), np.float32)
    X[1, 2] = 0.0
    with pytest.raises(InputError) as info:
        p.predict_proba(X)
    assert str(info.value).startswith("sample 1, timestep 2: every value equals the mask value 0")
    assert info.value.fields == {"sample": 1, "timestep": 2}
    assert info.value.without_sample().startswith("timestep 2: every value equals the mask value 0")
    X[1, 2] = 1.0
    X[2] = 0.0
    with pytest.raises(InputError) as info:
        p.predict_proba(X)
    assert info.value.fields == {"sample": 2}
    assert info.value.without_sample().startswith("every one of its 5 timesteps equals the mask value")


def test_csv_and_ts_errors_name_file_line_and_cell(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("sample_id,t,f0,f1\na,0,1,2\na,1,3,oops\n")
    with pytest.raises(DataFormatError) as info:
        read_sequences(csv)
    assert str(info.value) == f"{csv}:3 column 'f1': expected a number, got 'oops'"
    assert info.value.fields == {"file": str(csv), "line": 3, "sample": "a", "timestep": 1, "feature": "f1"}
    ts = tmp_path / "d.ts"
    ts.write_text("@univariate true\n@data\n1,2,3:0\n1,x,3:1\n")
    with pytest.raises(DataFormatError) as info:
        read_sequences(ts)
    assert str(info.value) == f"{ts}:4 dimension 0: expected a number, got 'x'"
    assert info.value.fields == {"file": str(ts), "line": 4, "sample": 1, "feature": 0}
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.ones((2, 3, F)), lengths=np.array([1, 9]))
    with pytest.raises(DataFormatError) as info:
        read_sequences(npz)
    assert info.value.fields == {"file": str(npz)}  # every error of a data file names the file


def test_parquet_errors_name_the_sequence_and_its_place(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="the parquet extra is not installed")
    import pyarrow.parquet as pq
    from tests.runtime.parquet_data import nested_table

    from pipeline import parquet_io

    path = tmp_path / "n.parquet"
    x = pa.array([[[1.0] * F] * 3, [[1.0] * (F + 1)] * 4], pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table({"id": ["p", "q"], "x": x}), path)
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == f"{path}: id 'q': expected {F} features per timestep, got {F + 1} at timestep 0"
    assert info.value.fields == {"file": str(path), "sample": "q", "timestep": 0}
    x = pa.array([[[1.0, 2.0, 3.0], [1.0, None, 3.0]]], pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table({"id": ["r"], "x": x}), path)
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == f"{path}: id 'r': expected finite values, got a null value at timestep 1, feature 1"
    assert info.value.fields == {"file": str(path), "sample": "r", "timestep": 1, "feature": 1}
    bad = [np.ones((3, F), np.float32), np.ones((2, F), np.float32)]
    bad[0][1, 2] = np.inf
    dec = parquet_io.decode_nested(nested_table(bad, ["p", "q"]), "id", n_features=F)
    assert dec.bad_reasons == ["expected finite values, got inf at timestep 1, feature 2"]
    assert dec.bad_fields == [{"timestep": 1, "feature": 2}]


def test_batch_scoring_reason_comes_from_the_fields_not_edited_text(tiny_predictor):
    """score_table: rows the Predictor refuses (here: finite raw values the graph's scaling overflows,
    which decoding cannot see) get ``without_sample()`` as their reason; the others are scored as alone."""
    pytest.importorskip("pyarrow", reason="the parquet extra is not installed")
    from tests.runtime.parquet_data import nested_table

    from pipeline.runtime.batch.score import score_table

    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((4, F)).astype(np.float32) for _ in range(11)]
    # row: (timestep, feature) of the overflowing value (features 0 and 1: std 0.5 and 0.75 in the tiny model)
    bad_rows = {0: (1, 0), 3: (0, 0), 4: (3, 1), 10: (2, 1)}
    for r, (t, f) in bad_rows.items():
        seqs[r][t, f] = 3.0e38
    ids = [f"s{i}" for i in range(11)]
    with np.errstate(over="ignore"):
        scored, refused, rows_in = score_table(tiny_predictor, nested_table(seqs, ids), "nested", "id")
    assert rows_in == 11
    reasons = dict(zip(refused.column("id").to_pylist(), refused.column("reason").to_pylist()))
    assert reasons == {f"s{r}": f"X after standardization: expected finite values, got inf at timestep {t}, "
                                f"feature {f} (1 non-finite values in this sample)" for r, (t, f) in bad_rows.items()}
    good = [i for i in range(11) if i not in bad_rows]
    assert scored.column("id").to_pylist() == [ids[i] for i in good]
    want = tiny_predictor.predict_proba(np.stack([seqs[i] for i in good]))
    np.testing.assert_array_equal(scored.column("probability").to_numpy(), want)


def test_stream_csv_error_names_its_line(predictor):
    """gru-predict --stream: the line, and the timestep (in the one-step chunk) and feature of the value."""
    import io

    from pipeline.runtime.stream import stream_csv

    good, bad = ",".join(["0.5"] * 8), ",".join(["0.5"] * 5 + ["nan"] + ["0.5"] * 2)
    with pytest.raises(InputError) as info:
        stream_csv(predictor, [good, "# comment", bad], io.StringIO())
    assert str(info.value) == ("stdin line 3: steps: expected finite values, got nan at timestep 0, feature 5 "
                               "(1 non-finite in all)")
    assert info.value.fields == {"line": 3, "timestep": 0, "feature": 5}
    with pytest.raises(InputError) as info:
        stream_csv(predictor, ["1,2"], io.StringIO())
    assert str(info.value) == "stdin line 1: expected 8 comma-separated numbers, got 2 field(s)"
    assert info.value.fields == {"line": 1}


def test_chunked_npy_error_names_the_files_sample(tmp_path):
    """gru-predict on a large .npy reads it in chunks; a row the model refuses is named by its number in
    the file (the chunk's start plus the error's sample field), not by its place in the chunk."""
    from pipeline.runtime.cli import predict_npy_chunked

    p = Predictor.load(write_tiny_model(tmp_path / "user_masked", masking=True, mask_value=0.0))
    X = np.ones((10, 5, F), np.float32)
    X[7, 1] = 0.0  # a step equal to the model's mask value inside a row: Keras would skip it
    np.save(tmp_path / "x.npy", X)
    import io

    with pytest.raises(InputError) as info:
        predict_npy_chunked(p, str(tmp_path / "x.npy"), io.StringIO(), chunk_bytes=3 * 5 * F * 4)  # 3 rows a chunk
    e = info.value
    assert str(e).startswith(f"{tmp_path / 'x.npy'}: sample 7: timestep 1: every value equals the mask value 0")
    assert e.fields == {"file": str(tmp_path / "x.npy"), "sample": 7, "timestep": 1}
