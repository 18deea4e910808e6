"""The long layouts (CSV and Parquet ``sample_id, t, <features...>``): ``t`` is each sequence's timestep
index 0, 1, ..., T_i - 1, each once. A missing ``t`` (a gap, or a sequence that does not start at 0), a
repeated one, or a ``t`` that is no index is refused with one line naming the sample, the ``t``, the file
(and the line, for CSV), through ``read_sequences`` and through gru-predict; rows in any order are fine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.datafiles import read_sequences
from pipeline.errors import DataFormatError
from pipeline.runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported"
F = 8  # features of the committed model
CONTRACT = "expected one row for every t = 0, 1, 2, ... up to the sequence's last timestep"


def _sequences() -> dict:
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal((6, F)).astype(np.float32), "b": rng.standard_normal((9, F)).astype(np.float32)}


def _rows(seqs: dict) -> list[list]:
    """[sample_id, t, f0..f7] per timestep, in sample then t order."""
    return [[sid, t, *x[t].tolist()] for sid, x in seqs.items() for t in range(len(x))]


# Each edit of the rows of sample "b" (t = 0..8), the (sample, missing or repeated t) the refusal names,
# the message's core, and the t of the row whose CSV line the message names.
EDITS = {
    "gap in the middle": (lambda rows: [r for r in rows if (r[0], r[1]) != ("b", 4)], 4,
                          "has no row for t=4 (its rows go from t=3 to t=5)", 5),
    "gap of two": (lambda rows: [r for r in rows if not (r[0] == "b" and r[1] in (4, 5))], 4,
                   "has no row for t=4..5 (its rows go from t=3 to t=6)", 6),
    "gap at the start": (lambda rows: [r for r in rows if (r[0], r[1]) != ("b", 0)], 0,
                         "has no row for t=0 (its first row is t=1)", 1),
    "counted from 1": (lambda rows: [[r[0], r[1] + (r[0] == "b"), *r[2:]] for r in rows], 0,
                       "has no row for t=0 (its first row is t=1)", 1),
}


def _csv(path: Path, rows: list[list], t_text=str) -> Path:
    lines = ["sample_id,t," + ",".join(f"f{j}" for j in range(F))]
    lines += [f"{r[0]},{t_text(r[1])}," + ",".join(repr(v) for v in r[2:]) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _line_of(path: Path, sid: str, t) -> int:
    """1-based line of the row (sid, t) in a CSV written by _csv."""
    for no, text in enumerate(path.read_text().splitlines(), 1):
        if text.startswith(f"{sid},{t},"):
            return no
    raise AssertionError(f"no row {sid},{t} in {path}")


def _parquet(path: Path, rows: list[list]) -> Path:
    pa = pytest.importorskip("pyarrow", reason="the parquet extra is not installed")
    import pyarrow.parquet as pq

    cols = {"sample_id": pa.array([r[0] for r in rows]), "t": pa.array([r[1] for r in rows], pa.float64())}
    for j in range(F):
        cols[f"f{j}"] = pa.array([r[2 + j] for r in rows], pa.float32())
    pq.write_table(pa.table(cols), path)
    return path


def _cli_refuses(capsys, args, fragment: str) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("gru-predict: error: ") and fragment in err, err
    assert out == ""  # nothing predicted
    return err


@pytest.mark.parametrize("edit", list(EDITS))
def test_csv_missing_timestep_is_refused(tmp_path, capsys, edit):
    change, missing, core, line_t = EDITS[edit]
    path = _csv(tmp_path / "d.csv", change(_rows(_sequences())))
    line = _line_of(path, "b", line_t if edit != "counted from 1" else 1)
    want = f"{path}:{line}: sample_id 'b' {core}: {CONTRACT}"
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == want
    assert info.value.fields == {"file": str(path), "line": line, "sample": "b", "timestep": missing}
    _cli_refuses(capsys, [EXPORTED, path], want)


def test_csv_repeated_timestep_is_refused(tmp_path, capsys):
    rows = _rows(_sequences())
    i = next(k for k, r in enumerate(rows) if (r[0], r[1]) == ("b", 2))
    path = _csv(tmp_path / "d.csv", rows + [list(rows[i])])  # the repeat comes last
    first, again = _line_of(path, "b", 2), len(path.read_text().splitlines())
    want = (f"{path}:{again}: duplicate row for sample_id 'b' at t=2 (first at line {first}): "
            "expected one row per timestep")
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == want
    assert info.value.fields == {"file": str(path), "line": again, "sample": "b", "timestep": 2}
    _cli_refuses(capsys, [EXPORTED, path], want)


@pytest.mark.parametrize("bad", ["2.5", "-1", "nan"])
def test_csv_t_that_is_no_timestep_index_is_refused(tmp_path, capsys, bad):
    rows = _rows(_sequences())
    path = _csv(tmp_path / "d.csv", rows, t_text=lambda t: bad if t == 2 else str(t))
    line = _line_of(path, "a", bad)
    want = (f"{path}:{line} column 't': expected a finite time index, got 'nan'" if bad == "nan" else
            f"{path}:{line} column 't': expected a timestep index (an integer 0, 1, 2, ...), got {bad!r}")
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == want
    assert info.value.fields == {"file": str(path), "line": line, "sample": "a"}
    _cli_refuses(capsys, [EXPORTED, path], want)


def test_csv_rows_in_any_order_and_t_written_as_float_are_read(tmp_path, capsys, predictor):
    seqs = _sequences()
    rows = _rows(seqs)
    order = np.random.default_rng(1).permutation(len(rows))
    path = _csv(tmp_path / "d.csv", [rows[i] for i in order], t_text=lambda t: repr(float(t)))  # "3.0"
    data = read_sequences(path)
    assert list(data.lengths) == [len(seqs[s]) for s in data.ids]
    for i, sid in enumerate(data.ids):
        np.testing.assert_array_equal(data.X[i, :len(seqs[sid])], seqs[sid])
    capsys.readouterr()
    assert main([str(EXPORTED), str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    want = {sid: float(predictor.predict_proba(seqs[sid][None])[0]) for sid in seqs}
    got = {row.split(",")[0]: float(row.split(",")[1]) for row in out[1:]}
    assert got.keys() == want.keys()
    for sid in want:
        assert abs(got[sid] - want[sid]) <= 1e-6, (sid, got[sid], want[sid])


# ---------------------------------------------------------------------------- Parquet, long layout

@pytest.mark.parametrize("edit", list(EDITS))
def test_parquet_missing_timestep_is_refused(tmp_path, capsys, edit):
    change, missing, core, _ = EDITS[edit]
    path = _parquet(tmp_path / "d.parquet", change(_rows(_sequences())))
    want = f"{path}: sample_id 'b': {core.removeprefix('has ')}: {CONTRACT}"
    with pytest.raises(DataFormatError) as info:
        read_sequences(path)
    assert str(info.value) == want
    assert info.value.fields == {"file": str(path), "sample": "b", "timestep": missing}
    _cli_refuses(capsys, [EXPORTED, path], want)


def test_parquet_repeated_or_non_index_t_is_refused(tmp_path, capsys):
    rows = _rows(_sequences())
    rep = _parquet(tmp_path / "rep.parquet", rows + [list(next(r for r in rows if (r[0], r[1]) == ("b", 2)))])
    want = f"{rep}: sample_id 'b': duplicate rows at t=2: expected one row per timestep"
    with pytest.raises(DataFormatError) as info:
        read_sequences(rep)
    assert str(info.value) == want and info.value.fields == {"file": str(rep), "sample": "b", "timestep": 2}
    _cli_refuses(capsys, [EXPORTED, rep], want)
    for bad, shown in ((2.5, "2.5"), (-1.0, "-1"), (float("nan"), "nan"), (float("inf"), "inf")):
        path = _parquet(tmp_path / f"t{shown}.parquet", [[r[0], bad if (r[0], r[1]) == ("a", 2) else r[1], *r[2:]]
                                                          for r in rows])
        want = f"{path}: sample_id 'a': expected a timestep index (an integer 0, 1, 2, ...) in 't', got {shown}"
        with pytest.raises(DataFormatError) as info:
            read_sequences(path)
        assert str(info.value) == want and info.value.fields == {"file": str(path), "sample": "a"}
        _cli_refuses(capsys, [EXPORTED, path], want)


def test_parquet_rows_in_any_order_are_read(tmp_path):
    seqs = _sequences()
    rows = _rows(seqs)
    path = _parquet(tmp_path / "d.parquet", [rows[i] for i in np.random.default_rng(2).permutation(len(rows))])
    data = read_sequences(path)
    assert sorted(data.ids) == ["a", "b"]
    for i, sid in enumerate(data.ids):
        assert data.lengths[i] == len(seqs[sid])
        np.testing.assert_array_equal(data.X[i, :len(seqs[sid])], seqs[sid])


def test_batch_job_routes_a_sequence_with_a_gap_to_errors(tmp_path, capsys):
    """gru-predict on long Parquet with --output: the sequence with a gap goes to _errors with its reason,
    the others are scored, and the exit code is 2 with the first reason on one line."""
    pytest.importorskip("pyarrow", reason="the parquet extra is not installed")
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    rows = [r for r in _rows(_sequences()) if (r[0], r[1]) != ("b", 4)]
    _parquet(tmp_path / "in" / "part.parquet", rows)
    out = tmp_path / "out"
    reason = f"no row for t=4 (its rows go from t=3 to t=5): {CONTRACT}"
    capsys.readouterr()
    assert main([str(a) for a in (EXPORTED, tmp_path / "in", "--output", out, "--workers", "1")]) == 2
    err = capsys.readouterr().err.splitlines()  # the job's summary line, then the error
    assert len(err) == 2 and err[0].startswith("wrote 1 predictions") and "1 of 2 sequences refused" in err[0], err
    assert err[1] == (f"gru-predict: error: 1 of 2 sequences could not be scored; their ids and reasons are in "
                      f"{out}/_errors (first: id 'b': {reason})"), err
    refused = pq.read_table(out / "_errors").to_pylist()
    assert [(r["id"], r["reason"]) for r in refused] == [("b", reason)]
    assert pq.read_table(out, columns=["id"]).column("id").to_pylist() == ["a"]
