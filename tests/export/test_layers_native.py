"""Native emitters of issue 27 one by one: front-ends, local pooling, padding, merges, attention and the
per-step GRU activations, each a small random-weight Functional model exported with ``export_native`` and
compared with Keras on onnxruntime (1e-5), with no Loop or Scan in the graph."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")

from pipeline.export.native import UnsupportedModelError, export_native, stream_support  # noqa: E402

T, F, ATOL = 16, 3, 1e-5
L = keras.layers


def _seq(x):
    return L.GRU(6, return_sequences=True)(x)


def _pool_after(make):
    return lambda x: L.GlobalAveragePooling1D()(make(_seq(x)))


def _views(x):
    s, h = L.GRU(6, return_sequences=True, return_state=True)(x)
    return L.Concatenate()([L.GlobalMaxPooling1D()(s), L.GlobalAveragePooling1D()(s), h])


def _gru_fcn(x):
    c = L.Activation("relu")(L.BatchNormalization()(L.Conv1D(8, 5, padding="same")(x)))
    return L.Concatenate()([L.GRU(6)(x), L.GlobalAveragePooling1D()(c)])


def _residual(x):
    h = L.Dense(6)(x)
    return L.GlobalAveragePooling1D()(L.LayerNormalization()(L.Add()([h, _seq(h)])))


MODELS = {
    **{f"Conv1D {pad} {kw}": (lambda pad, kw: lambda x: L.GRU(6)(L.Conv1D(6, 3, padding=pad, activation="relu",
                                                                           **kw)(x)))(pad, kw)
       for pad in ("valid", "same", "causal") for kw in ({}, {"strides": 2}, {"dilation_rate": 2}, {"groups": 3})
       if not (pad == "causal" and "strides" in kw)},
    "SeparableConv1D": lambda x: L.GRU(6)(L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same")(x)),
    "DepthwiseConv1D": lambda x: L.GRU(6)(L.DepthwiseConv1D(3, depth_multiplier=2)(x)),
    "MaxPooling1D same 3/2": lambda x: L.GRU(6)(L.MaxPooling1D(3, 2, padding="same")(x)),
    "AveragePooling1D same 3/2": lambda x: L.GRU(6)(L.AveragePooling1D(3, 2, padding="same")(x)),
    "UpSampling1D": lambda x: L.GRU(6)(L.UpSampling1D(2)(x)),
    "ZeroPadding1D": lambda x: L.GRU(6)(L.ZeroPadding1D((1, 2))(x)),
    "Cropping1D": lambda x: L.GRU(6)(L.Cropping1D((1, 2))(x)),
    "max + mean + last state": _views,
    "GRU-FCN": _gru_fcn,
    "LayerNorm residual": _residual,
    "Attention dot": _pool_after(lambda s: L.Attention()([s, s])),
    "Attention dot scale causal": _pool_after(lambda s: L.Attention(use_scale=True)([s, s], use_causal_mask=True)),
    "Attention concat": _pool_after(lambda s: L.Attention(use_scale=True, score_mode="concat")([s, s])),
    "AdditiveAttention": _pool_after(lambda s: L.AdditiveAttention()([s, s])),
    "MultiHeadAttention": _pool_after(lambda s: L.MultiHeadAttention(2, 4)(s, s)),
    "MultiHeadAttention causal value_dim": _pool_after(
        lambda s: L.MultiHeadAttention(3, 4, value_dim=5)(s, s, use_causal_mask=True)),
    "GRU activation=gelu (per step)": lambda x: L.GRU(6, activation="gelu")(x),
    "GRU recurrent_activation=softmax (per step)": lambda x: L.GRU(6, recurrent_activation="softmax")(x),
    "GRU activation=selu, recurrent sparse_sigmoid (per step)": lambda x: L.GRU(
        6, activation="selu", recurrent_activation="sparse_sigmoid")(x),
}


def _model(body, timesteps=T):
    keras.utils.set_random_seed(0)
    inp = keras.Input((timesteps, F))
    model = keras.Model(inp, L.Dense(1, activation="sigmoid")(body(inp)))
    rng = np.random.default_rng(3)
    model.set_weights([(w + 0.3 * rng.standard_normal(w.shape)).astype(np.float32) if w.ndim else w
                       for w in model.get_weights()])
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.5)
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_layer_matches_keras(name):
    model = _model(MODELS[name])
    proto = export_native(model, "x", 17)
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Loop", "Scan"}
    X = np.random.default_rng(1).standard_normal((6, T, F)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    err = np.abs(session.run(None, {"x": X})[0] - model.predict(X, verbose=0)).max()
    assert err <= ATOL, err
    if "per step" in name:
        assert "GRU" not in ops and stream_support(model)
    if any(k in name for k in ("Conv", "Pool", "Sampling", "Padding", "Cropping", "Attention", "FCN", "residual")):
        assert "reads neighbouring steps or merges branches" in stream_support(model)


def test_per_step_activation_needs_a_fixed_number_of_timesteps():
    model = _model(lambda x: L.GRU(6, activation="gelu")(x), timesteps=None)
    with pytest.raises(UnsupportedModelError, match="fixed number of timesteps"):
        export_native(model, "x", 17)


def test_masked_attention_is_refused():
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, F))
    s = L.GRU(6, return_sequences=True)(L.Masking(0.0)(inp))
    model = keras.Model(inp, L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling1D()(L.Attention()([s, s]))))
    with pytest.raises(UnsupportedModelError, match="masks a model with branches"):
        export_native(model, "x", 17)


def _bi_none(x):
    fw, bw = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode=None)(x)
    return L.Concatenate()([L.GlobalAveragePooling1D()(fw), L.GlobalMaxPooling1D()(bw)])


def _bi_none_last(x):
    fw, bw = L.Bidirectional(L.GRU(5), merge_mode=None)(x)
    return L.Subtract()([fw, bw])


@pytest.mark.parametrize("body", [_bi_none, _bi_none_last], ids=["sequences", "last states"])
def test_bidirectional_merge_mode_none(body):
    model = _model(body)
    proto = export_native(model, "x", 17)
    X = np.random.default_rng(2).standard_normal((5, T, F)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": X})[0] - model.predict(X, verbose=0)).max() <= ATOL
    assert "GRU" in {n.op_type for n in proto.graph.node}


def test_permute_that_swaps_time_and_features_is_refused():
    model = _model(lambda x: L.GRU(4)(L.Permute((2, 1))(x)))
    with pytest.raises(UnsupportedModelError, match="keep"):
        export_native(model, "x", 17)


@pytest.mark.parametrize("between", ["BatchNormalization", "LayerNormalization", "Dense", "TimeDistributed",
                                     "Activation"])
def test_mask_passes_through_per_step_layers(between):
    """Masking -> a per-step layer -> GRU -> average pooling on right-padded rows: the mask reaches the GRU
    (sequence_lens) and the pooling like in Keras."""
    make = {"BatchNormalization": lambda: L.BatchNormalization(), "LayerNormalization": lambda: L.LayerNormalization(),
            "Dense": lambda: L.Dense(4, activation="tanh"),
            "TimeDistributed": lambda: L.TimeDistributed(L.Dense(4, activation="gelu")),
            "Activation": lambda: L.Activation("softsign")}[between]
    model = _model(lambda x: L.GlobalAveragePooling1D()(L.GRU(5, return_sequences=True)(make()(L.Masking(0.0)(x)))),
                   timesteps=None)
    X = np.random.default_rng(4).standard_normal((5, T, F)).astype(np.float32)
    for row, length in enumerate([T, 3, 9, 1, 12]):
        X[row, length:] = 0.0
    proto = export_native(model, "x", 17)
    assert "GRU" in {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": X})[0] - model.predict(X, verbose=0)).max() <= ATOL
