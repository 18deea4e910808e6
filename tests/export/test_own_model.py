"""gru-export / gru-verify: models built and saved here, as a user would, exported with the CLI and
checked through the runtime against ``keras predict`` on inputs the export never saw."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.packaging import cli_export as export_cli  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402
from pipeline.packaging import cli_verify as verify_cli  # noqa: E402
from pipeline.packaging.recheck import assert_artifact_matches  # noqa: E402

T, F, V = 12, 3, 20
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seeded():
    """Seeded weights: an untrained model sits near p = 0.5, where a 1e-8 difference can flip a label
    (which verification refuses); seeds keep each test on the same, checked weights."""
    keras.utils.set_random_seed(0)


def _p1(model, X):
    """p(class 1) from keras predict, whatever the head."""
    y = model.predict(X, verbose=0)
    return y[:, 1] if y.shape[1] == 2 else y[:, 0]


def _features(n, t=T, seed=0):
    return np.random.default_rng(seed).standard_normal((n, t, F)).astype(np.float32)  # (n, t, F)


def _export(tmp_path, model, X, name, *extra, lengths=None, y=None, expect=0, capsys=None):
    model_file = tmp_path / f"{name}.keras"
    model.save(model_file)
    sample = tmp_path / f"{name}_sample.npz"
    arrays = {"X": X}
    if lengths is not None:
        arrays["lengths"] = lengths
    if y is not None:
        arrays["y"] = y
    np.savez(sample, **arrays)
    out = tmp_path / f"{name}_out"
    code = export_cli.main([str(model_file), "--sample-data", str(sample), "--out", str(out), *extra])
    assert code == expect
    return model_file, out


def _kernel_isas() -> list:
    """The fused kernel's ISA variants this CPU runs (skips the test when the library is not built)."""
    from pipeline.runtime import fused

    lib, _ = fused.load_library()
    if lib is None:
        pytest.skip("fused library not built")
    return fused.supported_isas(lib)


def _on_each_isa(monkeypatch, out, predict, want):
    """For each ISA variant this CPU runs: the Predictor of ``out`` restricted to it, ``predict(p)`` and its
    debug_info()["fused"], once the kernel ran that variant with the fallback's bits ``want`` (within 1e-6 where
    onnxruntime has no FMA kernels)."""
    from pipeline.runtime import fused

    isas = _kernel_isas()
    for isa in isas:
        monkeypatch.setattr(fused, "AUTO_ISAS", (isa,))
        p = Predictor.load(out)
        got = predict(p)
        info = p.debug_info()["fused"]
        assert info["used"] and info["isa"] == isa, info
        assert np.array_equal(got, want) if "avx2" in isas else np.abs(got - want).max() <= 1e-6, isa
        yield p, got, info


def test_sequential_writeup_model(tmp_path):
    """Sequential, GRU(16, input_shape=(T, F)), Dense(1, sigmoid): native GRU op, equal on unseen data."""
    model = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(16), keras.layers.Dense(1, activation="sigmoid")])
    X = _features(60)
    y = (X[:, :3, 0].sum(1) > 0).astype(np.int64)
    model.compile("adam", "binary_crossentropy")
    model.fit(X, y, epochs=1, verbose=0)
    model_file, out = _export(tmp_path, model, X, "seq", "--class-names", "no,yes", y=y)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "native" and "GRU" in manifest["model"]["ops"]
    assert manifest["source"]["file"] == "seq.keras" and len(manifest["source"]["sha256"]) == 64
    assert manifest["source"]["keras_backend"] == keras.backend.backend()
    assert manifest["metrics"]["sample"]["n"] == 60 and manifest["class_names"] == ["no", "yes"]
    assert manifest["preprocessing"]["type"] == "none" and manifest["stream"]["supported"]
    unseen = _features(50, seed=7)
    p = Predictor.load(out)
    assert np.abs(p.predict_proba(unseen) - _p1(model, unseen)).max() <= ATOL
    assert set(p.predict(unseen)) <= {"no", "yes"}
    assert verify_cli.main([str(out), "--keras", str(model_file)]) == 0
    assert_artifact_matches(out, model_file)


def test_functional_normalization_bidirectional(tmp_path):
    inputs = keras.Input((None, F))
    norm = keras.layers.Normalization()
    X = _features(80) * 4.0 + 3.0
    norm.adapt(X)
    h = keras.layers.Bidirectional(keras.layers.GRU(8, return_sequences=True))(norm(inputs))
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model_file, out = _export(tmp_path, model, X, "func")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["equivalence"]["passed"] and manifest["model"]["backend"] == "native"
    assert {"Sub", "Div", "GRU"} <= set(manifest["model"]["ops"])  # Normalization as graph ops
    for t in (T // 2, T, 2 * T):  # a dynamic time axis
        unseen = _features(30, t, seed=t) * 4.0 + 3.0
        assert np.abs(Predictor.load(out).predict_proba(unseen) - _p1(model, unseen)).max() <= ATOL
    print(f"\nNormalization + Bidirectional: backend {manifest['model']['backend']}, "
          f"max error {manifest['equivalence']['max_abs_error']:.3g}")


def test_masked_variable_length_model(tmp_path):
    inputs = keras.Input((None, F))
    h = keras.layers.GRU(8)(keras.layers.Masking(0.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, T + 1, 40)
    X = _features(40)
    X[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    _, out = _export(tmp_path, model, X, "masked", lengths=lengths)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["masking"]["enabled"] and manifest["model"]["backend"] == "native"
    consumers = {r["runtime"]: r for r in manifest["consumers"]["results"]}
    if consumers["OpenVINO (Python)"]["status"] != "not run":  # its Y_h is wrong on short rows; the graph avoids it
        assert consumers["OpenVINO (Python)"]["status"] == "ok", consumers
    seqs = [_features(1, int(n), seed=int(n))[0] for n in rng.integers(2, 2 * T, 15)]  # unseen, ragged
    got = Predictor.load(out).predict_proba(seqs)
    want = np.array([_p1(model, s[None])[0] for s in seqs])
    assert np.abs(got - want).max() <= ATOL


def test_embedding_text_model_softmax_head(tmp_path):
    inputs = keras.Input((None,), dtype="int64")
    h = keras.layers.Embedding(V, 6, mask_zero=True)(inputs)
    h = keras.layers.GRU(8)(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, T + 1, 40)
    ids = rng.integers(1, V, (40, T))
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    _, out = _export(tmp_path, model, ids, "text", lengths=lengths)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["kind"] == "tokens" and manifest["source"]["head"] == "softmax2"
    assert manifest["model"]["backend"] == "native"
    unseen = rng.integers(1, V, (25, T + 5))
    unseen_len = rng.integers(1, T + 6, 25)
    unseen[np.arange(T + 5)[None, :] >= unseen_len[:, None]] = 0
    got = Predictor.load(out).predict_proba(unseen, unseen_len)
    assert np.abs(got - _p1(model, unseen)).max() <= ATOL
    # and through gru-predict, on an NPZ of ids and lengths
    from pipeline.runtime import cli as predict_cli

    np.savez(tmp_path / "unseen_ids.npz", X=unseen, lengths=unseen_len)
    assert predict_cli.main([str(out), str(tmp_path / "unseen_ids.npz"), "--output", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().strip().splitlines()
    assert rows[0] == "id,probability,label" and len(rows) == 26
    np.testing.assert_allclose([float(r.split(",")[1]) for r in rows[1:]], got, atol=1e-7)


def test_logit_head_needs_the_flag(tmp_path, capsys):
    model = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4), keras.layers.Dense(1)])
    X = _features(20)
    _export(tmp_path, model, X, "logit", expect=2)
    assert "pass --logits" in capsys.readouterr().err
    _, out = _export(tmp_path, model, X, "logit2", "--logits")
    assert json.loads((out / "manifest.json").read_text())["model"]["backend"] == "native"
    unseen = _features(10, seed=3)
    want = 1.0 / (1.0 + np.exp(-model.predict(unseen, verbose=0)[:, 0].astype(np.float64)))
    assert np.abs(Predictor.load(out).predict_proba(unseen) - want).max() <= ATOL


def test_fallback_to_tf2onnx_is_verified_and_explained(tmp_path):
    inputs = keras.Input((T, F))
    h = keras.layers.LSTM(4, return_sequences=True)(inputs)  # no native emitter (Conv1D has one since issue 27)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(4)(h)))
    _, out = _export(tmp_path, model, _features(20), "lstm")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "tf2onnx" and "LSTM" in manifest["model"]["fallback_reason"]
    unseen = _features(10, seed=4)
    assert np.abs(Predictor.load(out).predict_proba(unseen) - _p1(model, unseen)).max() <= ATOL


def _refused(tmp_path, capsys, model_file, sample, *extra, code=2):
    out = tmp_path / "refused_out"
    assert export_cli.main([str(model_file), "--sample-data", str(sample), "--out", str(out), *extra]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("gru-export: error: ") and "\n" not in err and "Traceback" not in err
    assert not out.exists()
    return err


def test_refused_models_and_samples(tmp_path, capsys):
    good = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4), keras.layers.Dense(1, activation="sigmoid")])
    good_file = tmp_path / "good.keras"
    good.save(good_file)
    sample = tmp_path / "s.npz"
    np.savez(sample, X=_features(8))

    three = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4), keras.layers.Dense(3, activation="softmax")])
    three.save(tmp_path / "three.keras")
    assert "the model's head has 3 classes, got 2 names" in _refused(tmp_path, capsys, tmp_path / "three.keras", sample,
                                                                      "--class-names", "a,b")
    assert "argmax" in _refused(tmp_path, capsys, tmp_path / "three.keras", sample, "--threshold", "0.3")
    regression = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4), keras.layers.Dense(1, activation="relu")])
    regression.save(tmp_path / "reg.keras")
    assert "expected a classifier head" in _refused(tmp_path, capsys, tmp_path / "reg.keras", sample)
    sequence = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4, return_sequences=True),
                                 keras.layers.Dense(2, activation="softmax")])
    sequence.save(tmp_path / "sequence.keras")
    assert "sequence or regression output" in _refused(tmp_path, capsys, tmp_path / "sequence.keras", sample)
    a, b = keras.Input((T, F)), keras.Input((T, F))
    two = keras.Model([a, b], keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(4)(keras.layers.Add()([a, b]))))
    two.save(tmp_path / "two.keras")
    assert "2 input(s)" in _refused(tmp_path, capsys, tmp_path / "two.keras", sample)

    (tmp_path / "notkeras.keras").write_text("hello")
    assert "expected a .keras archive" in _refused(tmp_path, capsys, tmp_path / "notkeras.keras", sample)
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(good_file.read_bytes()[:200])
    assert "damaged" in _refused(tmp_path, capsys, damaged, sample)
    np.savez(tmp_path / "wrong_f.npz", X=np.zeros((4, T, F + 1), np.float32))
    assert f"expected {F} features" in _refused(tmp_path, capsys, good_file, tmp_path / "wrong_f.npz")
    nan = _features(4)
    nan[1, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X=nan)
    assert "NaN" in _refused(tmp_path, capsys, good_file, tmp_path / "nan.npz")
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, T, F), np.float32))
    assert "non-empty" in _refused(tmp_path, capsys, good_file, tmp_path / "empty.npz")

    inputs = keras.Input((None,), dtype="int64")
    text = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GRU(4)(keras.layers.Embedding(V, 4, mask_zero=True)(inputs))))
    text.save(tmp_path / "text.keras")
    np.savez(tmp_path / "ids.npz", X=np.full((3, T), V + 5, np.int64))
    assert f"[0, {V - 1}]" in _refused(tmp_path, capsys, tmp_path / "text.keras", tmp_path / "ids.npz")


def test_missing_custom_object_is_named(tmp_path, capsys):
    @keras.saving.register_keras_serializable(package="user")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    model = keras.Sequential([keras.Input((T, F)), Doubling(), keras.layers.GRU(4),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().pop("user>Doubling")
    sample = tmp_path / "s.npz"
    np.savez(sample, X=_features(4))
    err = _refused(tmp_path, capsys, tmp_path / "custom.keras", sample)
    assert "Doubling" in err and "--custom-objects" in err
    module = tmp_path / "objects.py"
    module.write_text("import keras\n\n\n@keras.saving.register_keras_serializable(package='user')\n"
                      "class Doubling(keras.layers.Layer):\n    def call(self, x):\n        return 2.0 * x\n")
    out = tmp_path / "custom_out"
    assert export_cli.main([str(tmp_path / "custom.keras"), "--sample-data", str(sample), "--out", str(out),
                            "--custom-objects", str(module)]) == 0
    assert json.loads((out / "manifest.json").read_text())["model"]["backend"] == "tf2onnx"


def test_verify_detects_a_changed_model(tmp_path, capsys):
    model = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4), keras.layers.Dense(1, activation="sigmoid")])
    _, out = _export(tmp_path, model, _features(16), "v")
    changed = tmp_path / "changed.keras"
    model.set_weights([w + 0.1 for w in model.get_weights()])
    model.save(changed)
    assert verify_cli.main([str(out), "--keras", str(changed)]) == 5
    err = capsys.readouterr().err
    assert "no longer equals the Keras model" in err and "reference inputs" in err
    with pytest.raises(AssertionError, match="no longer equals"):
        assert_artifact_matches(out, changed)


def test_unmasked_token_model_with_a_dynamic_time_axis(tmp_path):
    """An Embedding model without mask_zero and a None time axis: its unrolled graph fixes the time axis of
    the (batch, time) id input too (the runtime checks it against the manifest), and a list of id rows of
    different lengths scores each row as it would alone, as Keras does."""
    inputs = keras.Input((None,), dtype="int64")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GRU(4)(keras.layers.Embedding(V, 4)(inputs))))
    ids = np.random.default_rng(0).integers(1, V, (30, T))
    _, out = _export(tmp_path, model, ids, "tokens")
    assert json.loads((out / "manifest.json").read_text())["unrolled"]["supported"]
    p = Predictor.load(out)
    rows = [ids[0, :3], ids[1], ids[2, :5], ids[3, :3]]
    got = p.predict_proba(rows)
    assert np.array_equal(got, np.concatenate([p.predict_proba(r[None]) for r in rows]))
    assert np.abs(got - np.array([_p1(model, r[None])[0] for r in rows])).max() <= ATOL


def test_token_models_run_on_the_fused_kernel_bit_for_bit(tmp_path, monkeypatch):
    """Embedding (no mask_zero) -> Bidirectional GRU -> Dense(k, softmax), fixed length: the Predictor runs the
    fused kernel (the Embedding folded into the first layer) after its self-check on id rows, for every
    ISA variant, with model.onnx's bits (within 1e-6 on a CPU where onnxruntime has no FMA kernels); an id
    outside the vocabulary is still refused with the one-line error."""
    from pipeline.errors import InputError

    inputs = keras.Input((T,), dtype="int64")
    x = keras.layers.Bidirectional(keras.layers.GRU(12, return_sequences=True), merge_mode="ave")(
        keras.layers.Embedding(V, 6)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x)))
    ids = np.random.default_rng(0).integers(0, V, (40, T))
    y = np.arange(40) % 3
    _, out = _export(tmp_path, model, ids, "tok", y=y)
    want = Predictor.load(out, fused=False).predict_proba(ids)
    for p, got, info in _on_each_isa(monkeypatch, out, lambda p: p.predict_proba(ids), want):
        assert info["tokens"] == "fold", info  # debug_info names the path
        rows = [ids[0], ids[1, :4]]  # a list of rows of different lengths: each as alone
        assert np.array_equal(p.predict_proba(rows)[0], got[0])
        with pytest.raises(InputError):
            p.predict_proba(np.full((1, T), V))


def test_variable_length_models_run_on_the_fused_kernel_bit_for_bit(tmp_path, monkeypatch):
    """A variable-length export (lengths input; Masking(PAD_VALUE) -> GRU -> GRU(reset_after=False) -> mean over
    the real steps -> Dense(1, sigmoid)): the Predictor runs the fused kernel (rows longest first, each over
    its own steps) after a self-check over every length, for every ISA variant, with model.onnx's bits (1e-6
    where onnxruntime has no FMA kernels), from a padded array with lengths and from a list of rows."""
    from pipeline.training.model import PAD_VALUE

    inputs = keras.Input((None, F))
    x = keras.layers.Masking(mask_value=PAD_VALUE)(inputs)
    x = keras.layers.GRU(10, return_sequences=True)(x)
    x = keras.layers.GRU(7, reset_after=False, return_sequences=True)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(x)))
    X = _features(48)
    lens = np.random.default_rng(3).integers(1, T + 1, 48)
    for i, n in enumerate(lens):
        X[i, n:] = 0.0
    _, out = _export(tmp_path, model, X, "var", lengths=lens, y=np.arange(48) % 2)
    X[np.arange(T)[None, :] >= lens[:, None]] = np.nan  # past each length: never read
    want = Predictor.load(out, fused=False).predict_proba(X, lengths=lens)
    for p, got, info in _on_each_isa(monkeypatch, out, lambda p: p.predict_proba(X, lengths=lens), want):
        assert info["checks"][info["isa"]]["max_abs_vs_model_onnx"] <= 1e-6, info
        assert np.array_equal(p.predict_proba([X[i, :n] for i, n in enumerate(lens)]), got)


def test_variable_length_token_models_run_on_the_fused_kernel_bit_for_bit(tmp_path, monkeypatch):
    """Embedding(mask_zero) -> go_backwards GRU sequence -> Bidirectional GRU -> mean over the real steps ->
    Dense(3, softmax), exported with lengths: the Predictor runs the fused kernel after its self-check on token rows
    with every length, for every ISA variant, with model.onnx's bits (1e-6 where onnxruntime has no FMA kernels),
    from padded ids with lengths and from a list of rows; id 0 before a row's length is refused."""
    from pipeline.errors import InputError

    inputs = keras.Input((None,), dtype="int64")
    x = keras.layers.Embedding(V, 6, mask_zero=True)(inputs)
    x = keras.layers.GRU(9, go_backwards=True, return_sequences=True)(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(7, return_sequences=True))(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x)))
    rng = np.random.default_rng(4)
    lens = rng.integers(1, T + 1, 48)
    lens[0] = T
    ids = rng.integers(1, V, (48, T))
    ids[np.arange(T)[None, :] >= lens[:, None]] = 0
    _, out = _export(tmp_path, model, ids, "toklen", lengths=lens, y=np.arange(48) % 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["kind"] == "tokens" and manifest["input"]["lengths"] == "lengths"
    want = Predictor.load(out, fused=False).predict_proba(ids, lengths=lens)
    for p, got, info in _on_each_isa(monkeypatch, out, lambda p: p.predict_proba(ids, lengths=lens), want):
        assert info["tokens"] == "fold" and info["checks"][info["isa"]]["max_abs_vs_model_onnx"] <= 1e-6, info
        assert np.array_equal(p.predict_proba([ids[i, :n] for i, n in enumerate(lens)]), got)
        inside = ids.copy()
        inside[0, T // 2] = 0
        with pytest.raises(InputError):
            p.predict_proba(inside, lengths=lens)
