"""Every class count (schema 3, docs/artifact.md "Tasks and decision rules"): multiclass and multilabel
artifacts give (N, k) probabilities, decide by ``pipeline.decision.decide``, and every consumer carries
the k columns: predict, gru-predict's CSV, streams (also --stream) and the Parquet batch jobs.

Uses the tiny graphs of tests/tiny_models.py (no TensorFlow): a Dense(k) + Softmax head and a
Dense(k, sigmoid) multi-label head over the same GRU, k = 3, class names c0, c1, c2.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.decision import decide
from pipeline.runtime import Predictor
from tests.runtime.test_properties import run_cli

F, K = 3, 3
NAMES = ["c0", "c1", "c2"]


@pytest.fixture(scope="module", params=["multiclass", "multilabel"])
def k_model(request, tmp_path_factory, tiny_model_factory):
    folder = tmp_path_factory.mktemp(request.param) / "exported"
    return Predictor.load(tiny_model_factory(folder, task=request.param, stream=True))


def _X(n=40, t=7, seed=0):
    return np.random.default_rng(seed).normal(0.5, 2.0, (n, t, F)).astype(np.float32)


def _decided_names(model, proba):
    d = decide(proba, model.decision)
    if model.task == "multilabel":
        return [[NAMES[j] for j in np.flatnonzero(row)] for row in d]
    return [NAMES[j] for j in d]


def test_attributes(k_model):
    assert k_model.task in ("multiclass", "multilabel") and k_model.n_classes == K and k_model.class_names == NAMES
    assert k_model.threshold is None and k_model.decision == k_model.manifest["decision"]
    assert k_model.output_name == "probabilities" and k_model.n_outputs == K


def test_predict_proba_is_n_by_k_and_equals_plain_onnxruntime(k_model):
    X = _X()
    proba = k_model.predict_proba(X)
    assert proba.shape == (len(X), K) and proba.dtype == np.float32
    sess = ort.InferenceSession(str(k_model.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(proba, sess.run(None, {"x": X})[0])
    if k_model.task == "multiclass":
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    else:  # independent sigmoids: the rows do not sum to 1
        assert np.abs(proba.sum(axis=1) - 1.0).max() > 0.1
    # a list of rows of different lengths: each length group unpadded, the same numbers
    rows = [X[0], X[1, :3], X[2, :5]]
    want = np.concatenate([k_model.predict_proba(r[None]) for r in rows])
    assert np.array_equal(k_model.predict_proba(rows), want)


def test_predict_names_agree_with_decide(k_model):
    X = _X(seed=1)
    got = k_model.predict(X)
    want = _decided_names(k_model, k_model.predict_proba(X))
    if k_model.task == "multiclass":
        assert isinstance(got, np.ndarray) and got.shape == (len(X),) and got.tolist() == want
        assert len(set(got.tolist())) >= 2, "the tiny head should decide more than one class on these rows"
    else:
        assert isinstance(got, list) and got == want
        sizes = {len(names) for names in got}
        assert len(sizes) >= 2, f"expected rows deciding different numbers of labels, got sizes {sizes}"


def test_multilabel_thresholds_are_per_class(tmp_path, tiny_model_factory):
    """The multilabel rule compares p_j with its own threshold t_j (not 0.5 for all)."""
    p = Predictor.load(tiny_model_factory(tmp_path / "ml", task="multilabel"))
    X = _X(200, seed=2)
    proba = p.predict_proba(X)
    t = np.asarray(p.decision["thresholds"])
    assert not np.all(t == 0.5)
    expected = [[NAMES[j] for j in range(K) if proba[i, j] >= t[j]] for i in range(len(X))]
    assert p.predict(X) == expected
    at_half = [[NAMES[j] for j in range(K) if proba[i, j] >= 0.5] for i in range(len(X))]
    assert expected != at_half, "the rows should include one the per-class thresholds decide differently"


def _csv(text: str):
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_cli_csv_has_a_label_and_one_column_per_class(tmp_path, k_model, fmt):
    X = _X(25, seed=3)
    if fmt == "npz":
        np.savez(tmp_path / "x.npz", X=X, ids=np.array([f"row{i}" for i in range(25)]))
    else:
        np.save(tmp_path / "x.npy", X)
    rc, out, err = run_cli([k_model.model_dir, tmp_path / f"x.{fmt}"])
    assert rc == 0, err
    rows = _csv(out)
    assert rows[0] == ["id", "label", "p_c0", "p_c1", "p_c2"]
    assert [r[0] for r in rows[1:]] == ([f"row{i}" for i in range(25)] if fmt == "npz" else [str(i) for i in range(25)])
    proba = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    want = k_model.predict_proba(X)
    np.testing.assert_allclose(proba, want, rtol=1e-8, atol=0)  # printed with 9 significant digits
    names = _decided_names(k_model, want)
    labels = [r[1] for r in rows[1:]]
    if k_model.task == "multiclass":
        assert labels == names
    else:
        assert labels == ["|".join(n) for n in names]


def test_cli_multilabel_label_is_empty_when_no_class_is_decided(tmp_path, tiny_model_factory):
    import json

    folder = tiny_model_factory(tmp_path / "ml", task="multilabel")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["decision"]["thresholds"] = [0.999999, 0.999999, 0.999999]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", _X(5, seed=4))
    rc, out, err = run_cli([folder, tmp_path / "x.npy"])
    assert rc == 0, err
    rows = _csv(out)[1:]
    assert len(rows) == 5 and all(r[1] == "" for r in rows)


def test_cli_binary_columns_are_unchanged(tmp_path, tiny_model_dir):
    np.save(tmp_path / "x.npy", _X(4, seed=5))
    rc, out, err = run_cli([tiny_model_dir, tmp_path / "x.npy"])
    assert rc == 0, err
    assert _csv(out)[0] == ["id", "probability", "label"]


def test_stream_push_returns_k_probabilities(k_model):
    X = _X(4, t=6, seed=6)
    with k_model.stream() as s:
        pushed = []
        for t in range(X.shape[1]):
            p = s.push(X[0, t][None])
            assert isinstance(p, np.ndarray) and p.shape == (K,) and p.dtype == np.float32
            np.testing.assert_allclose(p, k_model.predict_proba(X[:1, :t + 1])[0], atol=1e-6, rtol=0)
            pushed.append((p, p.copy()))
        assert all(np.array_equal(a, b) for a, b in pushed), "a later push changed an array returned before"
    with k_model.stream(n_streams=4) as s:
        s.push(X[:, :2])
        p = s.push(X[:, 2:])
        assert p.shape == (4, K)
        np.testing.assert_allclose(p, k_model.predict_proba(X), atol=1e-6, rtol=0)
        state = s.get_state()
        assert set(state) == {"h_in_0"} and state["h_in_0"].shape == (4, 1, 4)


def test_cli_stream_prints_k_probabilities_per_step(tmp_path, k_model):
    X = _X(1, t=5, seed=7)[0]
    (tmp_path / "steps.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n")
    rc, out, err = run_cli([k_model.model_dir, tmp_path / "steps.csv", "--stream"])
    assert rc == 0, err
    got = np.array([[float(v) for v in line.split(",")] for line in out.splitlines()])
    assert got.shape == (5, K)
    want = np.stack([k_model.predict_proba(X[None, :t + 1])[0] for t in range(5)])
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ Parquet batch jobs

pa = pytest.importorskip("pyarrow", reason="the parquet extra is not installed (pip install -e '.[parquet]')")


def check_k_class_job(model: Predictor, tmp_path, engine: str) -> None:
    """A k-class Parquet job on ``engine`` ("local" through gru-predict, "ray" / "spark" through run_job):
    label + probabilities columns, the one NaN row refused with its reason, every other row once and
    equal to ``predict_proba``. Shared by tests/runtime/test_batch_{ray,spark}.py (their slow tier)."""
    import pyarrow.parquet as pq

    from pipeline.runtime.batch.job import run_job
    from tests.runtime.parquet_data import nested_table, ragged, read_output, write_files

    seqs = ragged(60, F, lo=1, hi=9, seed=8)
    seqs[7] = seqs[7].copy()
    seqs[7][0, 1] = np.nan  # refused, with its reason, never dropped
    ids = [f"s{i}" for i in range(60)]
    write_files(tmp_path / "in", nested_table(seqs, ids), 2, 16)
    if engine == "local":
        rc, _, err = run_cli([model.model_dir, tmp_path / "in", "--output", tmp_path / "out", "--workers", "1"])
        assert rc != 0 and "1 of 60 sequences could not be scored" in err
    else:
        summary = run_job(str(model.model_dir), str(tmp_path / "in"), str(tmp_path / "out"), engine=engine, workers=2)
        assert summary["engine"] == engine and summary["rows_refused"] == 1 and summary["rows_out"] == 59, summary
    scored, refused, summary = read_output(tmp_path / "out")
    assert scored.column_names == ["id", "label", "probabilities"]
    assert scored.schema.field("probabilities").type == pa.list_(pa.float32())
    assert refused.column("id").to_pylist() == ["s7"] and "expected finite values" in refused.column("reason")[0].as_py()
    assert sorted(scored.column("id").to_pylist() + ["s7"]) == sorted(ids)  # each row once
    good = [i for i in range(60) if i != 7]
    by_id = dict(zip(scored.column("id").to_pylist(), scored.column("probabilities").to_pylist()))
    want = model.predict_proba([seqs[i] for i in good])
    np.testing.assert_array_equal(np.array([by_id[ids[i]] for i in good], np.float32), want)
    labels = dict(zip(scored.column("id").to_pylist(), scored.column("label").to_pylist()))
    assert [labels[ids[i]] for i in good] == _decided_names(model, want)
    if model.task == "multilabel":
        assert scored.schema.field("label").type == pa.list_(pa.string())
    else:
        assert scored.schema.field("label").type == pa.string()
    assert pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet"))[0]).num_rows > 0


def test_local_batch_job_writes_label_and_probabilities(tmp_path, k_model):
    check_k_class_job(k_model, tmp_path, "local")


def test_user_job_api_carries_the_same_columns_and_nulls_for_refused_rows(k_model):
    from pipeline.runtime.batch.api import RayScorer, score_rows
    from tests.runtime.parquet_data import nested_table, ragged

    seqs = ragged(10, F, lo=2, hi=6, seed=9)
    seqs[3] = seqs[3][:, :2]  # wrong feature count: refused
    table = nested_table([s if s.shape[1] == F else np.zeros((2, F), np.float32) for s in seqs], list(range(10)))
    out = score_rows(k_model, table, "nested", "id")
    assert out.column_names == ["id", "label", "probabilities", "error"] and out.num_rows == 10
    assert out.column("error").null_count == 10
    bad = pa.table({"id": [1, 2], "x": pa.array([[[1.0, 2.0, 3.0]], [[np.nan, 0.0, 0.0]]],
                                                   type=pa.list_(pa.list_(pa.float32())))})
    out = RayScorer(str(k_model.model_dir))(bad)
    assert out.num_rows == 2 and out.column_names == ["id", "label", "probabilities", "error"]
    row = {r["id"]: r for r in out.to_pylist()}
    assert row[2]["probabilities"] is None and row[2]["label"] is None and "finite" in row[2]["error"]
    assert len(row[1]["probabilities"]) == K and row[1]["error"] is None


def test_spark_scorer_functions_carry_the_k_columns_without_spark(k_model):
    """SparkScorer's mapInPandas / applyInPandas functions and DDL for k classes (plain pandas frames: the
    same functions Spark calls; tests/runtime/test_batch_spark.py runs them on Spark for a binary model)."""
    pd = pytest.importorskip("pandas")
    from types import SimpleNamespace

    from pipeline.runtime.batch.api import SparkScorer
    from tests.runtime.parquet_data import long_table, ragged

    s = SparkScorer(str(k_model.model_dir), threads=1)
    df = SimpleNamespace(schema={"id": SimpleNamespace(dataType=SimpleNamespace(simpleString=lambda: "bigint"))})
    label = "array<string>" if k_model.task == "multilabel" else "string"
    assert s.output_schema(df) == f"id bigint, label {label}, probabilities array<float>, error string"
    seqs = ragged(6, F, lo=1, hi=5, seed=10)
    pdf = pd.DataFrame({"id": range(6), "x": [[list(map(float, step)) for step in seq] for seq in seqs]})
    out = pd.concat(list(s.nested(iter([pdf]))))
    assert list(out.columns) == ["id", "label", "probabilities", "error"] and len(out) == 6
    want = k_model.predict_proba(seqs)
    np.testing.assert_array_equal(np.stack(out["probabilities"].to_numpy()).astype(np.float32), want)
    got_labels = [list(v) if k_model.task == "multilabel" else v for v in out["label"]]
    assert got_labels == _decided_names(k_model, want)
    sl = SparkScorer(str(k_model.model_dir), id_column="sample_id", threads=1)
    group = long_table([seqs[2]], [2]).to_pandas()
    row = sl.long(group)
    np.testing.assert_array_equal(np.asarray(row["probabilities"][0], np.float32), want[2])


def test_get_state_of_a_one_stream_batch_is_a_copy(k_model):
    """Stream(n_streams=1).get_state() once returned a view of the stream's own buffer ((D, 1, H) transposed to
    (1, D, H) is already contiguous, so np.ascontiguousarray did not copy): a later push rewrote the saved state."""
    X = _X(2, t=4, seed=8)
    with k_model.stream(n_streams=1) as s:
        s.push(X[:1, :2])
        saved = s.get_state()
        kept = {k: v.copy() for k, v in saved.items()}
        s.push(X[1:, :2])
        s.push(X[1:, 2:])  # the stream alternates two state buffers: the second push rewrites the first
        assert all(np.array_equal(saved[k], kept[k]) for k in kept), "a push changed a state returned before"
