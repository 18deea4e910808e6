"""Self-contained ONNX (issue 14): every graph takes raw features and carries its metadata; model.onnx
alone, in onnxruntime, OpenVINO and onnxruntime-node, gives what our runtime and Keras give.

Two tiny builds: the default task (fixed length, no mask) and a masked variable-length model
trained on a right-padded NPZ whose features are far from zero mean (so a scaling applied twice,
or not at all, or a padding step scaled instead of masked, would show).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from pipeline import artifact  # noqa: E402
from pipeline.errors import VerificationError, ExportError  # noqa: E402
from pipeline.export.scaling import embed_preprocessing  # noqa: E402
from pipeline.preprocessing import apply_preprocessing  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402
from pipeline.settings import load_config  # noqa: E402
from pipeline.training import run as builder  # noqa: E402
from pipeline.verification import consumers  # noqa: E402

TINY = {"model": {"units": 8}, "train": {"epochs": 2, "batch_size": 32, "verbose": "0"},
        "verify": {"n_random": 32, "large_batch": 64, "odd_batch": 7}}
ATOL_PLAIN = 1e-6  # plain onnxruntime on the file vs Predictor (issue 14)
ATOL_CONSUMER = 1e-5


def _variable_length_npz(path, n=200, T=12, F=3, seed=1):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, T + 1, size=n)
    y = np.arange(n) % 2
    X = np.zeros((n, T, F), np.float32)  # right padding (the lengths say where real steps end)
    for i in range(n):
        X[i, :lengths[i]] = rng.standard_normal((lengths[i], F)) * 2.0 + 5.0
        X[i, :2, 0] += 3.0 if y[i] else -3.0
    X[::7, 2] = 0.0  # real all-zero steps: data, not padding
    np.savez(path, X=X, y=y, lengths=lengths)
    return path


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("self_contained")
    default = root / "default"
    builder.run_build(load_config(None, {**TINY, "out": str(default),
                                         "data": {"n_samples": 240, "timesteps": 12, "features": 3}}))
    masked = root / "masked"
    builder.run_build(load_config(None, {**TINY, "out": str(masked),
                                         "data": {"path": str(_variable_length_npz(root / "var.npz"))}}))
    return {"default": default, "masked": masked}


def _manifest(folder):
    return json.loads((folder / artifact.MANIFEST_FILE).read_text())


def _plain(path, feeds):
    """onnxruntime on the file with nothing of ours in between."""
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


# ----------------------------------------------------------------------------- the graph transform

def _identity_graph(F=2, elem=TensorProto.FLOAT, opset=17):
    """x (batch, time, F) -> Identity -> y: shows what the graph did to its input."""
    node = helper.make_node("Identity", ["x"], ["y"])
    dims = ["batch", "time", F] if elem == TensorProto.FLOAT else ["batch", "time"]
    graph = helper.make_graph([node], "identity", [helper.make_tensor_value_info("x", elem, dims)],
                              [helper.make_tensor_value_info("y", elem, dims)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [17, 18])
def test_embedded_scaling_is_bit_identical_and_steps_past_the_lengths_become_the_pad_value(opset):
    prep = {"type": "standardize", "mean": [5.0, -3.25], "std": [0.3, 7.0]}
    X = np.random.default_rng(0).normal(4.0, 3.0, (3, 5, 2)).astype(np.float32)
    X[1, 3:] = 12345.0  # whatever lies past row 1's length
    X[2, 1] = 0.0  # a real all-zero step is data
    lengths = np.array([5, 3, 5], np.int64)
    plain = embed_preprocessing(_identity_graph(opset=opset), prep)
    assert np.array_equal(_plain(plain.SerializeToString(), {"x": X})[0], apply_preprocessing(X, prep))
    masked = embed_preprocessing(_identity_graph(opset=opset), prep, masking=True, pad_value=-7.5)
    assert [i.name for i in masked.graph.input] == ["x", "lengths"]
    got = _plain(masked.SerializeToString(), {"x": X, "lengths": lengths})[0]
    want = apply_preprocessing(X, prep)
    want[1, 3:] = -7.5  # exactly the pad value, whatever the data held
    assert np.array_equal(got, want)
    assert masked.graph.input[0].name == "x" and [n.op_type for n in masked.graph.node][:2] == ["Sub", "Div"]


def test_token_graphs_pad_with_id_zero_past_the_lengths():
    tokens = _identity_graph(elem=TensorProto.INT64)
    masked = embed_preprocessing(tokens, {"type": "none"}, masking=True)
    ids = np.arange(1, 13, dtype=np.int64).reshape(2, 6)
    got = _plain(masked.SerializeToString(), {"x": ids, "lengths": np.array([6, 2], np.int64)})[0]
    assert got.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]]


def test_transform_leaves_fixed_length_unscaled_graphs_alone_and_refuses_a_wrong_length():
    tokens = _identity_graph(elem=TensorProto.INT64)
    assert embed_preprocessing(tokens, {"type": "none"}) == tokens
    unscaled = _identity_graph()
    assert embed_preprocessing(unscaled, {"type": "none"}) == unscaled
    with pytest.raises(ExportError, match="expected 2 means and stds"):
        embed_preprocessing(unscaled, {"type": "standardize", "mean": [0.0] * 3, "std": [1.0] * 3})
    with pytest.raises(ExportError, match="cannot be standardized"):
        embed_preprocessing(tokens, {"type": "standardize", "mean": [0.0], "std": [1.0]})


# ----------------------------------------------------------------------------- built artifacts

@pytest.mark.parametrize("kind", ["default", "masked"])
def test_plain_onnxruntime_on_raw_features_equals_the_predictor(builds, kind):
    """The issue's "done when": InferenceSession(model.onnx).run(None, {"x": raw}) == Predictor.predict_proba(raw)."""
    folder = builds[kind]
    ref = np.load(folder / artifact.REFERENCE_FILE)
    raw = ref["X"]  # (N, T, F) raw; masked: right-padded, with its lengths
    feeds = {"x": raw, **({"lengths": ref["lengths"]} if kind == "masked" else {})}
    plain = _plain(folder / artifact.MODEL_FILE, feeds)[0][:, 0]
    predictor = Predictor.load(folder)
    lengths = ref["lengths"] if kind == "masked" else None
    assert np.abs(plain - predictor.predict_proba(raw, lengths)).max() <= ATOL_PLAIN
    assert np.abs(plain - ref["keras_proba"]).max() <= ATOL_CONSUMER
    if kind == "masked":
        assert (ref["lengths"] < raw.shape[1]).any(), "the reference rows should include padded ones"
        assert _manifest(folder)["preprocessing"]["in_graph"] is True


def test_what_lies_past_the_lengths_changes_nothing(builds):
    """Garbage past each row's length (plain onnxruntime and the Predictor alike) gives the same numbers."""
    folder = builds["masked"]
    ref = np.load(folder / artifact.REFERENCE_FILE)
    X, lengths = ref["X"].copy(), ref["lengths"]
    past = np.arange(X.shape[1])[None, :] >= lengths[:, None]  # (N, T)
    X[past] = np.random.default_rng(5).uniform(-1e4, 1e4, (int(past.sum()), X.shape[2]))
    assert past.any()
    plain = _plain(folder / artifact.MODEL_FILE, {"x": X, "lengths": lengths})[0][:, 0]
    assert np.array_equal(plain, _plain(folder / artifact.MODEL_FILE, {"x": ref["X"], "lengths": lengths})[0][:, 0])
    assert np.array_equal(Predictor.load(folder).predict_proba(X, lengths), Predictor.load(folder).predict_proba(
        [ref["X"][i, :n] for i, n in enumerate(lengths)]))


def test_stream_and_unrolled_graphs_take_raw_features_too(builds):
    folder = builds["default"]
    m = _manifest(folder)
    raw = np.load(folder / artifact.REFERENCE_FILE)["X"][:16]
    expected = Predictor.load(folder, graph="native").predict_proba(raw)
    unrolled = _plain(folder / m["unrolled"]["file"], {"x": raw})[0][:, 0]
    assert np.abs(unrolled - expected).max() <= ATOL_CONSUMER
    sess = ort.InferenceSession(str(folder / m["stream"]["file"]), providers=["CPUExecutionProvider"])
    states = {s["input"]: np.zeros((s["shape"][0], len(raw), s["shape"][1]), np.float32) for s in m["stream"]["states"]}
    for t in range(raw.shape[1]):  # one raw step at a time, states fed back
        out = sess.run(None, {"x": raw[:, t:t + 1], **states})
        names = [o.name for o in sess.get_outputs()]
        res = dict(zip(names, out))
        states = {s["input"]: res[s["output"]] for s in m["stream"]["states"]}
    assert np.abs(res["probability"][:, 0] - expected).max() <= ATOL_CONSUMER


@pytest.mark.parametrize("kind", ["default", "masked"])
def test_metadata_inside_every_graph(builds, kind):
    folder = builds[kind]
    m = _manifest(folder)
    files = [("model", m["model"])] + [(g, m[g]) for g in ("stream", "unrolled") if m[g].get("supported")]
    assert len(files) == (3 if kind == "default" else 2)
    for graph, entry in files:
        assert entry["sha256"] == artifact.sha256_file(folder / entry["file"])  # stamped files are the ones listed
        proto = onnx.load(str(folder / entry["file"]))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["graph"] == graph and meta["schema_version"] == str(artifact.SCHEMA_VERSION)
        assert json.loads(meta["class_names"]) == m["class_names"]
        assert meta["task"] == m["task"] == "binary" and json.loads(meta["decision"]) == m["decision"]
        assert meta["features"] == str(m["input"]["shape"][2]) and meta["timesteps"].isdigit()
        assert json.loads(meta["preprocessing"]) == m["preprocessing"]
        assert json.loads(meta["masking"]) == m["masking"]
        assert meta["mask_value"] == "none (no value means padding)"
        assert meta["producer_name"] == proto.producer_name == "gru-pipeline" and proto.producer_version
        assert meta["source_model_sha256"] == m["source_model"]["sha256"] and len(meta["source_model_sha256"]) == 64
        assert 0 <= float(meta["verified_max_abs_error"]) <= float(meta["verified_atol"]) == 1e-5
        assert "RAW features" in meta["input"] and "RAW features" in proto.graph.input[0].doc_string
        assert "metadata_props" in proto.doc_string
        assert meta["padding"].startswith("right padding with lengths") == (kind == "masked" and graph == "model")
        assert [i.name for i in proto.graph.input][:2] == (["x", "lengths"] if kind == "masked" and graph == "model"
                                                           else ["x", *[i.name for i in proto.graph.input][1:2]])
    assert float(dict((p.key, p.value) for p in onnx.load(str(folder / "model.onnx")).metadata_props)
                 ["verified_max_abs_error"]) == m["equivalence"]["max_abs_error"]


@pytest.mark.parametrize("kind", ["default", "masked"])
def test_other_runtimes_agree_within_1e5(builds, kind):
    """OpenVINO and onnxruntime-node run model.onnx alone on the reference rows (at build time, and here)."""
    folder = builds[kind]
    m = _manifest(folder)
    ref = np.load(folder / artifact.REFERENCE_FILE)
    results = {r["runtime"]: r for r in m["consumers"]["results"]}
    assert set(results) == {"onnxruntime (Python)", "OpenVINO (Python)", "onnxruntime-node (JavaScript)"}
    assert m["consumers"]["rows"] == len(ref["X"]) and m["consumers"]["atol"] == ATOL_CONSUMER
    report = (folder / artifact.REPORT_FILE).read_text()
    assert "## Other runtimes" in report
    for name, run in (("OpenVINO (Python)", consumers.run_openvino), ("onnxruntime-node (JavaScript)", consumers.run_node)):
        entry = results[name]
        assert f"| {name} |" in report
        if entry["status"] == "not run":  # only when the consumer truly is not installed here
            pytest.skip(f"{name}: {entry['reason']}")
        assert entry["status"] == "ok" and entry["max_abs_error_vs_keras"] <= ATOL_CONSUMER, entry
        feeds = {"x": ref["X"], **({"lengths": ref["lengths"]} if kind == "masked" else {})}
        proba, version = run(folder / artifact.MODEL_FILE, feeds)
        assert version == entry["version"]
        assert np.abs(proba - ref["keras_proba"]).max() <= ATOL_CONSUMER


def test_a_consumer_that_cannot_run_is_not_run_never_ok(builds, monkeypatch):
    folder = builds["default"]
    ref = np.load(folder / artifact.REFERENCE_FILE)
    monkeypatch.setattr(consumers.shutil, "which", lambda name: None)

    def missing(*args):
        raise consumers.NotRun("the openvino package is not installed")

    def wrong(path, feeds):
        return np.zeros(len(feeds["x"]), np.float32), "9.9"

    spec = _manifest(folder)["input"]
    entry = consumers.check_consumers(folder, ref["X"], ref["keras_proba"], spec, consumers=[
        ("node", consumers.run_node), ("openvino", missing), ("wrong", wrong)])
    by = {r["runtime"]: r for r in entry["results"]}
    assert by["node"]["status"] == "not run" and "node is not on PATH" in by["node"]["reason"]
    assert by["openvino"]["status"] == "not run" and by["openvino"]["max_abs_error_vs_keras"] is None
    assert by["wrong"]["status"] == "failed" and by["wrong"]["max_abs_error_vs_keras"] > ATOL_CONSUMER
    with pytest.raises(VerificationError, match="wrong 9.9"):
        consumers.raise_on_failure(entry)

    def crashes(path, feeds):
        raise RuntimeError("Unsupported op: Loop")

    entry = consumers.check_consumers(folder, ref["X"], ref["keras_proba"], spec, consumers=[("crashes", crashes)])
    assert entry["results"][0]["status"] == "unsupported" and "Loop" in entry["results"][0]["reason"]
    consumers.raise_on_failure(entry)  # cannot load the file: recorded with the reason, not a disagreement


def test_all_zero_real_steps_are_data(builds):
    """A real all-zero step is an ordinary input: it is scored (and changes the answer), in batches and streams."""
    predictor = Predictor.load(builds["masked"])
    X = np.load(builds["masked"] / artifact.REFERENCE_FILE)["X"][:2].copy()
    before = predictor.predict_proba(X)
    X[:, 1] = 0.0  # inside the rows
    after = predictor.predict_proba(X)
    assert np.isfinite(after).all() and not np.array_equal(before, after)
    with predictor.stream() as s:
        assert np.isfinite(s.push(np.zeros((1, X.shape[2]), np.float32)))


def test_real_zero_steps_score_the_same_on_every_path(builds, tmp_path, capsys):
    """Issue 24's "done when", on the variable-length gru-build artifact: series holding real all-zero steps
    (inside and at the end) score the same through predict_proba(list), gru-predict on a long CSV and on a
    nested Parquet file, and plain onnxruntime fed model.onnx with X and lengths, within 1e-6."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from pipeline.runtime.cli import main as predict_main

    folder = builds["masked"]
    ref = np.load(folder / artifact.REFERENCE_FILE)
    seqs = [ref["X"][i, :n].copy() for i, n in enumerate(ref["lengths"][:12])]
    for i, s in enumerate(seqs):
        s[min(1, len(s) - 1)] = 0.0  # a real all-zero step inside the row
        if i % 2:
            s[-1] = 0.0  # and one at its end
    ids = [f"s{i}" for i in range(len(seqs))]
    want = Predictor.load(folder).predict_proba(seqs)  # (12,)
    T = max(len(s) for s in seqs)
    X = np.zeros((len(seqs), T, seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        X[i, :len(s)] = s
    lengths = np.array([len(s) for s in seqs], np.int64)
    plain = _plain(folder / artifact.MODEL_FILE, {"x": X, "lengths": lengths})[0][:, 0]
    assert np.abs(plain - want).max() <= 1e-6

    csv = tmp_path / "long.csv"
    rows = ["sample_id,t," + ",".join(f"f{j}" for j in range(X.shape[2]))]
    rows += [f"{sid},{t}," + ",".join(repr(float(v)) for v in s[t]) for sid, s in zip(ids, seqs) for t in range(len(s))]
    csv.write_text("\n".join(rows) + "\n")
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"id": ids, "x": [s.tolist() for s in seqs]}), nested)
    for path in (csv, nested):
        capsys.readouterr()
        assert predict_main([str(folder), str(path)]) == 0  # one CSV row per sample on stdout
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "id,probability,label"
        got = {r.split(",")[0]: float(r.split(",")[1]) for r in lines[1:]}
        assert np.abs(np.array([got[i] for i in ids]) - want).max() <= 1e-6, path.name
