"""Every class count and lengths as data, through gru-export as a user runs it: multi-class softmax,
k logits, multi-label sigmoid heads and a variable-length Masking model, each exported with the CLI
and checked through the runtime against Keras on inputs the export never saw (docs/artifact.md)."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnxruntime = pytest.importorskip("onnxruntime")

from pipeline.decision import decide  # noqa: E402
from pipeline.packaging import cli_export as export_cli  # noqa: E402
from pipeline.packaging import cli_verify as verify_cli  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402

T, F = 12, 3
ATOL = 1e-5
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _features(n, t=T, seed=0):
    return np.random.default_rng(seed).standard_normal((n, t, F)).astype(np.float32)  # (n, t, F)


def _export(tmp_path, model, X, name, *extra, lengths=None, y=None):
    model_file = tmp_path / f"{name}.keras"
    model.save(model_file)
    arrays = {"X": X, **({"lengths": lengths} if lengths is not None else {}), **({"y": y} if y is not None else {})}
    np.savez(tmp_path / f"{name}_sample.npz", **arrays)
    out = tmp_path / f"{name}_out"
    assert export_cli.main([str(model_file), "--sample-data", str(tmp_path / f"{name}_sample.npz"), "--out", str(out),
                            *extra]) == 0
    return model_file, out, json.loads((out / "manifest.json").read_text())


def _trained(head, k, loss, y):
    model = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(8), head])
    model.compile("adam", loss)
    model.fit(_features(64), y, epochs=1, verbose=0)
    return model


def test_multiclass_softmax(tmp_path, capsys):
    y = np.random.default_rng(1).integers(0, 5, 64)
    model = _trained(keras.layers.Dense(5, activation="softmax"), 5, "sparse_categorical_crossentropy", y)
    names = "a,b,c,d,e"
    model_file, out, manifest = _export(tmp_path, model, _features(64), "five", "--class-names", names,
                                        y=np.array(names.split(","))[y])
    assert manifest["task"] == "multiclass" and manifest["class_names"] == names.split(",")
    assert manifest["decision"] == {"rule": "argmax"} and manifest["output"]["shape"] == ["batch", 5]
    assert manifest["model"]["backend"] == "native" and "Softmax" in manifest["model"]["ops"]
    assert len(manifest["metrics"]["sample"]["confusion_matrix"]) == 5
    unseen = _features(50, seed=7)
    p = Predictor.load(out)
    keras_p = model.predict(unseen, verbose=0)
    got = p.predict_proba(unseen)
    assert got.shape == (50, 5) and np.abs(got - keras_p).max() <= ATOL
    assert list(p.predict(unseen)) == [names.split(",")[i] for i in keras_p.argmax(axis=1)]
    # model.onnx alone, in plain onnxruntime: the same probabilities and, by its own metadata, the same rule
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    alone = session.run(None, {"x": unseen})[0]
    meta = session.get_modelmeta().custom_metadata_map
    assert np.abs(alone - keras_p).max() <= ATOL and json.loads(meta["decision"]) == {"rule": "argmax"}
    assert meta["task"] == "multiclass" and json.loads(meta["class_names"]) == names.split(",")
    assert verify_cli.main([str(out), "--keras", str(model_file)]) == 0
    # gru-predict: id,label,p_<class>...; a stream: the k probabilities after every step
    from pipeline.runtime.cli import main as predict_main

    np.save(tmp_path / "unseen.npy", unseen)
    capsys.readouterr()
    assert predict_main([str(out), str(tmp_path / "unseen.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id,label," + ",".join(f"p_{c}" for c in names.split(","))
    table = np.array([[float(v) for v in row.split(",")[2:]] for row in lines[1:]])
    assert table.shape == (50, 5) and np.abs(table - keras_p).max() <= ATOL
    with p.stream() as s:
        for t in range(T):
            last = s.push(unseen[0, t:t + 1])
    assert last.shape == (5,) and np.abs(last - keras_p[0]).max() <= ATOL


def test_logits_get_a_softmax_in_the_graph(tmp_path):
    y = np.random.default_rng(2).integers(0, 4, 64)
    model = _trained(keras.layers.Dense(4), 4, keras.losses.SparseCategoricalCrossentropy(from_logits=True), y)
    model_file, out, manifest = _export(tmp_path, model, _features(64), "logits", "--logits")
    assert manifest["task"] == "multiclass" and manifest["source"]["head"] == "logits"
    unseen = _features(40, seed=8)
    z = model.predict(unseen, verbose=0).astype(np.float64)
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = Predictor.load(out).predict_proba(unseen)
    assert got.shape == (40, 4) and np.abs(got - want).max() <= ATOL
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    assert verify_cli.main([str(out), "--keras", str(model_file)]) == 0


def test_multilabel_sigmoid_with_thresholds(tmp_path):
    y = (np.random.default_rng(3).random((64, 4)) < 0.4).astype(np.int64)
    model = _trained(keras.layers.Dense(4, activation="sigmoid"), 4, "binary_crossentropy", y)
    model_file, out, manifest = _export(tmp_path, model, _features(64), "tags", "--class-names", "w,x,y,z",
                                        "--threshold", "0.3,0.5,0.5,0.7", y=y)
    assert manifest["task"] == "multilabel"
    assert manifest["decision"] == {"rule": "thresholds", "thresholds": [0.3, 0.5, 0.5, 0.7]}
    unseen = _features(40, seed=9)
    keras_p = model.predict(unseen, verbose=0)
    p = Predictor.load(out)
    got = p.predict_proba(unseen)
    assert got.shape == (40, 4) and np.abs(got - keras_p).max() <= ATOL
    on = decide(keras_p, manifest["decision"])
    assert p.predict(unseen) == [[n for n, o in zip("wxyz", row) if o] for row in on]
    assert verify_cli.main([str(out), "--keras", str(model_file)]) == 0


def test_masking_model_takes_lengths_and_ignores_what_lies_past_them(tmp_path):
    """A user's Masking(-1) model: the artifact takes lengths as data; real all-zero steps are data; garbage
    past each row's length changes nothing; trailing steps equal to the mask value become the lengths."""
    inputs = keras.Input((None, F))
    h = keras.layers.GRU(8, return_sequences=True)(keras.layers.Masking(mask_value=-1.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h)))
    rng = np.random.default_rng(4)
    X = _features(48, seed=4)
    lengths = rng.integers(3, T + 1, 48)
    X[np.arange(T)[None, :] >= lengths[:, None]] = -1.0  # the model's own padding
    X[0, 1] = 0.0  # a real all-zero step inside a row
    X[1, lengths[1] - 1] = 0.0  # and at its end
    model_file, out, manifest = _export(tmp_path, model, X, "masked", lengths=lengths)
    assert manifest["input"]["lengths"] == "lengths" and manifest["masking"]["mask_value"] == -1.0
    p = Predictor.load(out)
    keras_p = model.predict(X, verbose=0)
    assert np.abs(p.predict_proba(X, lengths) - keras_p).max() <= ATOL
    garbage = X.copy()
    past = np.arange(T)[None, :] >= lengths[:, None]
    garbage[past] = rng.uniform(-1e3, 1e3, (int(past.sum()), F))
    assert np.array_equal(p.predict_proba(garbage, lengths), p.predict_proba(X, lengths))
    assert np.array_equal(p.predict_proba(X), p.predict_proba(X, lengths))  # trailing -1 steps are the padding
    rows = [X[i, :lengths[i]] for i in range(len(X))]
    assert np.array_equal(p.predict_proba(rows), p.predict_proba(X, lengths))
    # plain onnxruntime fed model.onnx with X and lengths: the same numbers
    alone = onnxruntime.InferenceSession(str(out / "model.onnx")).run(None, {"x": garbage, "lengths": lengths})[0]
    assert np.abs(alone - keras_p).max() <= ATOL
    assert verify_cli.main([str(out), "--keras", str(model_file)]) == 0
