"""The committed exported/ model reproduces the committed Keras reference outputs (no TensorFlow)."""

import json
from pathlib import Path

import numpy as np

from pipeline.decision import decide
from pipeline.runtime import Predictor

EXPORTED = Path(__file__).resolve().parents[2] / "exported"


def test_committed_model_matches_keras_reference():
    manifest = json.loads((EXPORTED / "manifest.json").read_text())
    ref = np.load(EXPORTED / "reference.npz", allow_pickle=False)
    p = Predictor.load(EXPORTED)
    lengths = ref["lengths"] if manifest["input"]["lengths"] else None  # a variable-length model takes them
    proba = p.predict_proba(ref["X"], lengths)
    assert proba.shape == ref["keras_proba"].shape
    err = np.abs(proba.astype(np.float64) - ref["keras_proba"].astype(np.float64))
    assert err.max() <= manifest["config"]["verify"]["atol"] <= 1e-5
    assert manifest["schema_version"] == 3 and p.task == manifest["task"] and p.decision == manifest["decision"]
    assert (decide(proba, manifest["decision"]) == decide(ref["keras_proba"], manifest["decision"])).all()


def test_committed_manifest_records_a_passed_verification_and_accuracy():
    manifest = json.loads((EXPORTED / "manifest.json").read_text())
    eq = manifest["equivalence"]
    assert eq["passed"] and eq["max_abs_error"] <= 1e-5
    names = {f["name"] for f in eq["families"]}
    assert {"test split", "saturating +-100", "random normal", "batch of 1"} <= names
    assert manifest["metrics"]["test"]["accuracy"] >= 0.95
    assert manifest["metrics"]["order_blind_baseline_test_accuracy"] <= 0.65
    assert manifest["model"]["backend"] == "native"
    assert "GRU" in manifest["model"]["ops"] and "Loop" not in manifest["model"]["ops"]


def test_predict_returns_class_names_and_list_input():
    p = Predictor.load(EXPORTED)
    ref = np.load(EXPORTED / "reference.npz", allow_pickle=False)
    X = ref["X"][:10]
    labels = p.predict(X)
    assert labels.shape == (10,)
    assert set(labels.tolist()) <= set(p.class_names)
    # A list of (T_i, F) arrays gives the same numbers as the stacked array when lengths agree.
    np.testing.assert_array_equal(p.predict_proba(list(X)), p.predict_proba(X))


def test_committed_model_runs_alone_in_plain_onnxruntime():
    """exported/model.onnx is self-contained: raw features in, the Predictor's numbers out, metadata inside."""
    import onnxruntime as ort

    manifest = json.loads((EXPORTED / "manifest.json").read_text())
    raw = np.load(EXPORTED / "reference.npz", allow_pickle=False)["X"]
    sess = ort.InferenceSession(str(EXPORTED / "model.onnx"), providers=["CPUExecutionProvider"])
    plain = sess.run(None, {"x": raw})[0][:, 0]
    assert np.abs(plain - Predictor.load(EXPORTED).predict_proba(raw)).max() <= 1e-6
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == manifest["class_names"]
    assert json.loads(meta["decision"]) == manifest["decision"] and meta["task"] == manifest["task"]
    assert float(meta["verified_max_abs_error"]) == manifest["equivalence"]["max_abs_error"] <= 1e-5
    assert manifest["preprocessing"]["in_graph"] is True
    ok = {r["runtime"]: r["status"] for r in manifest["consumers"]["results"]}
    assert ok["onnxruntime (Python)"] == "ok" and set(ok.values()) <= {"ok", "not run"}
