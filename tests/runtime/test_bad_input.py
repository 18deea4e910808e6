"""Bad input through the API and the predict CLI: one clear line, non-zero exit, no traceback."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported"

from pipeline.errors import ArtifactError, InputError, IntegrityError  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402


@pytest.fixture
def good_X(predictor):
    return np.load(EXPORTED / "reference.npz")["X"][:3]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda X: X[0], "expected shape (samples, timesteps, 8), got rank 2"),
        (lambda X: X[..., :5], "expected 8 features in the last axis, got 5"),
        (lambda X: X[:0], "expected at least one sample"),
        (lambda X: X[:, :0], "expected at least one sample and one timestep"),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), "expected finite values, got nan"),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.inf, X), "expected finite values, got inf"),
        (lambda X: X.astype(str), "expected numeric features"),
        (lambda X: X.astype(object), "expected numeric features"),
        (lambda X: X > 0, "expected numeric features (float or int), got bool"),
        (lambda X: [], "expected at least one sequence"),
        (lambda X: [X[0], X[1][:, :3]], "X[1]: expected 8 features, got 3"),
    ],
)
def test_api_rejects_bad_arrays(predictor, good_X, make, expected):
    with pytest.raises(InputError) as info:
        predictor.predict_proba(make(good_X))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_api_refuses_lengths_for_the_fixed_length_committed_model(predictor, good_X):
    """exported/ has one graph input (manifest input.lengths null): lengths, good or bad, are refused
    (the bad-lengths messages of variable-length models are in test_lengths.py)."""
    for lengths in (np.array([50, 5, 5]), np.array([0, 5, 5]), [1.5, 2, 3]):
        with pytest.raises(InputError, match=r"^lengths: this model has a fixed-length input") as info:
            predictor.predict_proba(good_X, lengths=lengths)
        assert "\n" not in str(info.value)


def test_int_features_are_accepted(predictor, good_X):
    Xi = np.round(good_X).astype(np.int32)
    np.testing.assert_array_equal(predictor.predict_proba(Xi), predictor.predict_proba(Xi.astype(np.float32)))


def _copy_exported(tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(EXPORTED, dst)
    return dst


def test_hash_mismatch_is_refused(tmp_path):
    d = _copy_exported(tmp_path)
    data = bytearray((d / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        Predictor.load(d)


def test_truncated_model_with_matching_hash_is_refused(tmp_path):
    from pipeline.artifact import sha256_file

    d = _copy_exported(tmp_path)
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[: len(data) // 2])
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["model"]["sha256"] = sha256_file(d / "model.onnx")
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        Predictor.load(d)


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="model folder not found"):
        Predictor.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="manifest.json not found"):
        Predictor.load(tmp_path)


# ----------------------------------------------------------------------------- CLI

def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.runtime", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=120)


def _assert_clean_failure(res, fragment):
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("gru-predict: error:")
    assert fragment in err, err


def test_cli_predicts_npz_npy_csv(tmp_path, good_X):
    np.savez(tmp_path / "a.npz", X=good_X)
    np.save(tmp_path / "a.npy", good_X)
    rows = ["sample_id,t," + ",".join(f"f{i}" for i in range(8))]
    for s in range(3):
        for t in range(good_X.shape[1]):
            rows.append(f"s{s},{t}," + ",".join(repr(float(v)) for v in good_X[s, t]))
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    outs = []
    for name in ("a.npz", "a.npy", "a.csv"):
        res = run_cli(EXPORTED, tmp_path / name)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.strip().splitlines()
        assert lines[0] == "id,probability,label" and len(lines) == 4
        outs.append([float(row.split(",")[1]) for row in lines[1:]])
    np.testing.assert_allclose(outs[0], outs[1], atol=0)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-7)
    res = run_cli(EXPORTED, tmp_path / "a.csv", "--output", tmp_path / "out.csv")
    assert res.returncode == 0 and (tmp_path / "out.csv").read_text().startswith("id,probability,label\ns0,")


def test_cli_bad_inputs(tmp_path, good_X):
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "missing.npz"), "data file not found")
    (tmp_path / "empty.csv").write_text("")
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "empty.csv"), "data file is empty")
    (tmp_path / "x.txt").write_text("1,2,3")
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "x.txt"), "unknown data format")
    np.save(tmp_path / "rank2.npy", good_X[0])
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "rank2.npy"), "expected X with shape (samples, timesteps, features), got rank 2")
    np.save(tmp_path / "f5.npy", good_X[..., :5])
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "f5.npy"), "expected 8 features")
    bad = good_X.copy()
    bad[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "nan.npy"), "expected finite values, got nan at sample 1, timestep 2, feature 3")
    (tmp_path / "text.csv").write_text("sample_id,t," + ",".join(f"f{i}" for i in range(8)) + "\na,0,1,2,3,x,5,6,7,8\n")
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "text.csv"), "expected a number, got 'x'")
    np.savez(tmp_path / "pickled.npz", X=np.array([object(), 1], dtype=object))
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "pickled.npz"), "pickles are refused")
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "f5.npy").read_bytes()[:100])
    _assert_clean_failure(run_cli(EXPORTED, tmp_path / "trunc.npy"), "cannot read")


def test_cli_bad_models(tmp_path, good_X):
    np.save(tmp_path / "a.npy", good_X)
    _assert_clean_failure(run_cli(tmp_path / "nope", tmp_path / "a.npy"), "model folder not found")
    d = _copy_exported(tmp_path)
    data = bytearray((d / "model.onnx").read_bytes())
    data[200] ^= 0x55
    (d / "model.onnx").write_bytes(bytes(data))
    _assert_clean_failure(run_cli(d, tmp_path / "a.npy"), "sha256 mismatch")
    (d / "model.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((d / "manifest.json").read_text())
    from pipeline.artifact import sha256_file
    manifest["model"]["sha256"] = sha256_file(d / "model.onnx")
    (d / "manifest.json").write_text(json.dumps(manifest))
    _assert_clean_failure(run_cli(d, tmp_path / "a.npy"), "not a loadable ONNX model")


def test_cli_directory_input_says_what_it_must_hold(tmp_path, capsys):
    """A directory INPUT is a Parquet batch job: a folder with no Parquet files (the model folder given twice,
    an empty folder, only hidden files) is refused naming what it must hold and what it holds; one with
    Parquet files but no --output is told to add it."""
    from pipeline.runtime.cli import main

    def refused(*args) -> str:
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
        return err.removeprefix("gru-predict: error: ").rstrip("\n")

    no_parquet = "is a directory with no Parquet files (.parquet, .parq, .pq): a directory INPUT is scored as a " \
                 "Parquet batch job (with --output DIR) and must hold them; this one holds "
    model_hint = (f"; {str(EXPORTED)!r} looks like an exported model folder: give it as MODEL_DIR and a data file "
                  "(.npz, .npy, .csv, .ts, .parquet) as INPUT")
    names = sorted(p.name for p in EXPORTED.iterdir())
    listing = ", ".join(names[:6]) + f", ... ({len(names)} entries)"
    for extra in ([], ["--output", tmp_path / "out"]):
        assert refused(EXPORTED, EXPORTED, *extra) == f"INPUT {str(EXPORTED)!r} {no_parquet}{listing}{model_hint}"
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert refused(EXPORTED, empty) == f"INPUT {str(empty)!r} {no_parquet}nothing"
    hidden = tmp_path / "hidden"
    (hidden / "_tmp").mkdir(parents=True)
    (hidden / ".a.parquet").write_bytes(b"")
    (hidden / "_tmp" / "b.parquet").write_bytes(b"")
    (hidden / "notes.txt").write_text("x")
    assert refused(EXPORTED, hidden, "--output", tmp_path / "o") == \
        f"INPUT {str(hidden)!r} {no_parquet}.a.parquet, _tmp, notes.txt"
    parts = tmp_path / "parts"
    (parts / "day=1").mkdir(parents=True)
    (parts / "day=1" / "a.parquet").write_bytes(b"")
    assert refused(EXPORTED, parts) == (f"INPUT {str(parts)!r} is a directory of 1 Parquet file(s), scored as a batch "
                                        "job that writes a directory of Parquet parts: expected --output DIR")
