"""The gallery of issue 27: published-style Keras GRU architectures, each built here, trained briefly, saved,
exported with gru-export and checked on unseen inputs through ``Predictor`` and plain onnxruntime (1e-5).

Every one must export with the native backend (no Loop, no Scan); where a stream graph is impossible the
manifest must say why.
"""

import json
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")

from pipeline.packaging import cli_export  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402

T, F, ATOL = 24, 2, 1e-5
L = keras.layers


def _cnn_bigru(x):  # ECG-style: Conv1D + BatchNormalization + MaxPooling1D + BiGRU
    c = L.Conv1D(8, 5, padding="same", activation="relu")(x)
    c = L.MaxPooling1D(2)(L.BatchNormalization()(c))
    return L.Dense(1, activation="sigmoid")(L.Bidirectional(L.GRU(8))(c))


def _gru_fcn(x):  # GRU branch || convolutional branch, concatenated
    c = x
    for filters, k in ((8, 7), (8, 5), (8, 3)):
        c = L.Activation("relu")(L.BatchNormalization()(L.Conv1D(filters, k, padding="same")(c)))
    c = L.GlobalAveragePooling1D()(c)
    g = L.Dropout(0.2)(L.GRU(8)(x))
    return L.Dense(1, activation="sigmoid")(L.Concatenate()([g, c]))


def _gru_attention(x):  # attention pooling over the GRU's outputs
    s = L.GRU(8, return_sequences=True)(x)
    a = L.Attention(use_scale=True)([s, s])
    m = L.MultiHeadAttention(2, 4)(s, s)
    return L.Dense(1, activation="sigmoid")(L.Concatenate()([L.GlobalAveragePooling1D()(a),
                                                             L.GlobalMaxPooling1D()(m)]))


def _layernorm_residual(x):
    h = L.Dense(8)(x)
    for _ in range(2):
        h = L.LayerNormalization()(L.Add()([h, L.GRU(8, return_sequences=True)(h)]))
    return L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling1D()(h))


def _dense_stack_bn(x):  # the sixth model: max and mean pooling, gelu/selu Dense stack with BatchNormalization
    s = L.GRU(8, return_sequences=True)(x)
    h = L.Concatenate()([L.GlobalMaxPooling1D()(s), L.GlobalAveragePooling1D()(s)])
    h = L.Dropout(0.1)(L.BatchNormalization()(L.Dense(8, activation="gelu")(h)))
    h = L.Dense(8, activation="selu")(h)
    return L.Dense(1, activation="sigmoid")(h)


def _time_distributed_embedding(x):
    h = L.TimeDistributed(L.Dense(6, activation="tanh"))(x)
    return L.Dense(1, activation="sigmoid")(L.GRU(8)(h))


def _softsign_gru(x):
    return L.Dense(1, activation="sigmoid")(L.GRU(8, activation="softsign")(x))


GALLERY = {
    "cnn_bigru": (_cnn_bigru, False),
    "gru_fcn": (_gru_fcn, False),
    "gru_attention": (_gru_attention, False),
    "layernorm_residual": (_layernorm_residual, False),
    "dense_stack_bn": (_dense_stack_bn, False),
    "time_distributed": (_time_distributed_embedding, True),
    "softsign_gru": (_softsign_gru, True),
}


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery_model_exports_natively(tmp_path, name):
    build, streams = GALLERY[name]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, T, F)).astype(np.float32)
    y = (X[:, :6, 0].sum(1) > 0).astype(np.int64)
    inp = keras.Input((T, F))
    model = keras.Model(inp, build(inp))
    model.compile("adam", "binary_crossentropy")
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    np.savez(tmp_path / "sample.npz", X=X, y=y)
    out = tmp_path / "out"
    start = time.perf_counter()
    code = cli_export.main([str(path), "--sample-data", str(tmp_path / "sample.npz"), "--out", str(out),
                            "--backend", "native"])
    seconds = time.perf_counter() - start
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "native"
    assert not {"Loop", "Scan"} & set(manifest["model"]["ops"])
    assert manifest["stream"]["supported"] is streams, manifest["stream"]
    if not streams:
        assert manifest["stream"]["reason"]
    unseen = np.random.default_rng(7).standard_normal((20, T, F)).astype(np.float32)
    want = keras.models.load_model(path).predict(unseen, verbose=0)[:, 0]
    got = Predictor.load(out).predict_proba(unseen)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    plain = session.run(None, {session.get_inputs()[0].name: unseen})[0][:, 0]
    err = max(np.abs(got - want).max(), np.abs(plain - want).max())
    consumers = {r["runtime"]: (r["status"], r["reason"]) for r in manifest["consumers"]["results"]}
    print(f"gallery {name}: max err {err:.2e}, gru-export {seconds:.1f} s, consumers {consumers}")
    assert err <= ATOL
    # Every other runtime that can run here agrees, or the manifest (the consumers table) says why not.
    assert all(status in ("ok", "not run") or reason for status, reason in consumers.values()), consumers
    assert all(status != "failed" for status, _ in consumers.values()), consumers
