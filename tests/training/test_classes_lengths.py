"""gru-build with k classes and with variable lengths whose data holds real all-zero steps.

A tiny 3-class build (string labels, a separate test file) publishes a verified multi-class artifact:
(N, 3) probabilities, argmax decisions, a 3 x 3 confusion matrix in the report. A tiny variable-length
build whose series contain all-zero steps inside and at their end trains, verifies and ignores whatever a
row holds past its length; the graph pads with the training sentinel. Pieces without training: the
padding guard and the order-blind baseline for k classes.
Imports: pipeline.training (TensorFlow), pipeline.runtime, onnx. Writes: tmp folders only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import DataFormatError
from pipeline.training import cli as build_cli

TINY_TOML = """
seed = 3

[model]
units = 8

[train]
updates = 120
verbose = "0"

[verify]
n_random = 32
large_batch = 64
odd_batch = 7
"""

NAMES = np.array(["low", "mid", "high"])  # sorted by gru-build: ['high', 'low', 'mid']


def three_classes(path, n, seed, T=12):
    """(n, T, 2) series; a bump on feature 0 whose sign says the class: -3 low, 0 mid, +3 high."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, T, 2)).astype(np.float32)
    for i in range(n):
        t = rng.integers(0, T - 3)
        X[i, t:t + 3, 0] += (y[i] - 1) * 3.0
    np.savez(path, X=X, y=NAMES[y])
    return path


def zero_steps(path, n, seed, T=14):
    """Variable-length binary series, every one with real all-zero steps at t = 1 and at its last step."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, T + 1, size=n)
    y = np.arange(n) % 2
    X = np.zeros((n, T, 2), np.float32)
    for i in range(n):
        X[i, :lengths[i]] = rng.standard_normal((lengths[i], 2))
        t = rng.integers(2, lengths[i] - 4)
        X[i, t:t + 3, 0] += 3.0 if y[i] else -3.0
        X[i, 1] = 0.0
        X[i, lengths[i] - 1] = 0.0
    np.savez(path, X=X, y=y, lengths=lengths)
    return path


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("classes_lengths")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY_TOML)
    three_train, three_test = three_classes(root / "three.npz", 45, 0), three_classes(root / "three_test.npz", 24, 1)
    zeros = zero_steps(root / "zeros.npz", 40, 2)
    out3, outz = root / "out3", root / "outz"
    assert build_cli.main(["--data", str(three_train), "--test-data", str(three_test), "--out", str(out3),
                           "--config", str(cfg)]) == 0
    assert build_cli.main(["--data", str(zeros), "--out", str(outz), "--config", str(cfg)]) == 0
    return {"three": (out3, three_test), "zeros": (outz, zeros)}


def test_three_class_build_is_a_verified_multiclass_artifact(builds):
    from pipeline.runtime import Predictor

    out, test_file = builds["three"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "multiclass" and m["decision"] == {"rule": "argmax"}
    assert m["class_names"] == ["high", "low", "mid"] and m["output"]["shape"] == ["batch", 3]
    assert m["equivalence"]["passed"] and m["equivalence"]["max_abs_error"] <= 1e-5
    assert m["masking"] == {"enabled": False, "mask_value": None, "padding": None}

    data = np.load(test_file)
    p = Predictor.load(out).predict_proba(data["X"])
    assert p.shape == (24, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    ref = np.load(out / "reference.npz")
    assert ref["keras_proba"].shape == (24, 3) and np.abs(p - ref["keras_proba"]).max() <= 1e-5
    truth = np.searchsorted(np.array(m["class_names"]), data["y"])  # string labels -> indices
    test = m["metrics"]["test"]
    cm = np.array(test["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 24 and cm.sum(axis=1).tolist() == [8, 8, 8]
    assert test["accuracy"] == pytest.approx(float((p.argmax(axis=1) == truth).mean()))
    assert test["accuracy"] == pytest.approx(np.trace(cm) / 24)
    assert set(test["per_class"]) == {"high", "low", "mid"} and 0 <= test["macro_f1"] <= 1
    assert list(Predictor.load(out).predict(data["X"][:6])) == [m["class_names"][j] for j in p[:6].argmax(axis=1)]

    report = (out / "report.md").read_text()
    assert "| | pred 'high' | pred 'low' | pred 'mid' |" in report
    for name, row in zip(m["class_names"], cm):
        assert f"| true {name!r} | {' | '.join(str(v) for v in row)} |" in report
    assert "macro-F1" in report and "| class | precision | recall | F1 | support |" in report
    assert "argmax" in report and "ROC AUC" not in report
    for png in ("training_curves.png", "confusion_matrix.png", "equivalence_errors.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report
    assert not (out / "roc_curve.png").exists()  # no ROC / PR for k classes
    assert m["metrics"]["order_blind_baseline_test_accuracy"] is not None


def test_variable_length_with_real_zero_steps_builds_and_ignores_what_lies_past_the_lengths(builds):
    import onnx
    from onnx import numpy_helper

    from pipeline.runtime import Predictor, fused
    from pipeline.training.model import PAD_VALUE

    out, data_file = builds["zeros"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "binary" and m["equivalence"]["passed"]
    assert m["masking"] == {"enabled": True, "mask_value": None, "padding": "lengths"}
    assert m["input"]["lengths"] == "lengths"
    ref = np.load(out / "reference.npz")
    real = np.arange(ref["X"].shape[1])[None, :] < ref["lengths"][:, None]
    zero_real = (ref["X"] == 0).all(axis=2) & real  # (n, T) real all-zero steps among the reference rows
    assert zero_real[:, 1].all() and zero_real[np.arange(len(real)), ref["lengths"] - 1].all()

    predictor = Predictor.load(out)
    p = predictor.predict_proba(ref["X"], ref["lengths"])
    assert np.abs(p - ref["keras_proba"]).max() <= 1e-5  # Keras (zero steps as data) == the artifact
    lib, _ = fused.load_library()
    if lib is not None and set(fused.supported_isas(lib)) & set(fused.AUTO_ISAS):  # a CPU the kernel runs on
        info = predictor.debug_info()["fused"]  # the kernel reads this graph's sequence_lens as the lengths given
        assert info["used"], info
        assert np.array_equal(p, Predictor.load(out, fused=False).predict_proba(ref["X"], ref["lengths"]))
    garbage = ref["X"].copy()
    rng = np.random.default_rng(0)
    pad = ~real
    garbage[pad] = rng.standard_normal((int(pad.sum()), garbage.shape[2])).astype(np.float32) * 1e3
    garbage[pad & (np.arange(pad.shape[1])[None, :] % 3 == 0)] = 0.0  # zeros past the end too
    assert np.array_equal(predictor.predict_proba(garbage, ref["lengths"]), p)

    # the graph puts the training sentinel past each length (the Masking layer's mask value)
    graph = onnx.load(str(out / "model.onnx")).graph
    scalars = [numpy_helper.to_array(t) for t in graph.initializer if numpy_helper.to_array(t).size == 1]
    assert any(a.dtype == np.float32 and float(a.reshape(())) == PAD_VALUE for a in scalars)
    assert {i.name for i in graph.input} == {"x", "lengths"}


def test_padded_steps_hold_the_sentinel_and_real_values_near_it_are_refused():  # TF-free: the quick tier
    from pipeline.training.dataset import PAD_VALUE, pad_past_lengths as _padded

    Z = np.zeros((2, 4, 1), np.float32)  # real all-zero steps
    padded = _padded(Z, np.array([4, 2]), "f.npz", np.array(["a", "b"]))
    assert (padded[0] == 0).all() and (padded[1, :2] == 0).all() and (padded[1, 2:] == np.float32(PAD_VALUE)).all()
    Z[1, 1, 0] = -2e29
    with pytest.raises(DataFormatError) as info:
        _padded(Z, np.array([4, 2]), "f.npz", np.array(["a", "b"]))
    assert str(info.value) == ("f.npz: sample b timestep 1 feature 0 scales to -2e+29; expected scaled values above "
                               "-1e+29 (the padding value is -1e+30)")
    Z[1, 1, 0], Z[1, 3, 0] = 0.0, -2e29  # past the length: padding, not data
    assert (_padded(Z, np.array([4, 2]), "f.npz", None)[1, 3] == np.float32(PAD_VALUE)).all()


def test_order_blind_baseline_for_k_classes():
    from pipeline.training.baseline import order_blind_accuracy

    rng = np.random.default_rng(0)
    n, T = 240, 20
    y = np.arange(n) % 4
    lengths = np.full(n, T)
    by_mean = rng.standard_normal((n, T, 2)).astype(np.float32)
    by_mean[:, :, 0] += y[:, None] * 1.0  # the class moves feature 0's mean
    acc = order_blind_accuracy(by_mean[:160], lengths[:160], y[:160], by_mean[160:], lengths[160:], y[160:], 4)
    assert acc >= 0.9
    # the class only in the order of two steps: the same mean and std for every class -> near chance (0.25)
    by_order = rng.standard_normal((n, T, 1)).astype(np.float32)
    first, second = 2 + y, 12 - y  # steps holding +5 and -5
    by_order[np.arange(n), first, 0] = 5.0
    by_order[np.arange(n), second, 0] = -5.0
    acc = order_blind_accuracy(by_order[:160], lengths[:160], y[:160], by_order[160:], lengths[160:], y[160:], 4)
    assert acc <= 0.45
