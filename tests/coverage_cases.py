"""Coverage of the native ONNX GRU exporter: the configurations people use, built and measured.

Owns: the list of model configurations (``CASES``), building one as a tiny Keras model with
non-trivial random weights, exporting it with ``export_native``, running it in onnxruntime on
random and "real" inputs (the default order task, standardized; for models that normalize their own
input, both mapped to raw scales first) at two batch sizes and two sequence lengths, and measuring
max |Keras - ORT|. A test harness, not part of the package: used by tests/export/test_native_coverage.py,
tests/export/test_fused_coverage.py (random weights) and tools/coverage_table.py (which renders the
results into docs/export-coverage.md; the latency figure there comes from tools/benchmarks/native_vs_loop.py).
Imported as ``coverage_cases`` (tests/ is on ``sys.path`` under pytest; tools/coverage_table.py puts it there).
Imports: numpy, onnx, keras (build stage only), pipeline.export, pipeline.training.dataset and
pipeline.runtime.sessions (every onnxruntime session).
Reads/writes: nothing on disk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import onnx

from pipeline.training.dataset import make_order_task
from pipeline.preprocessing import apply_preprocessing, fit_standardization

__all__ = [
    "Case", "CaseResult", "CASES", "case_by_name", "build_case", "randomize_weights", "make_inputs",
    "ort_session", "run_onnx", "keras_run", "measure_case", "graph_ops", "FEATURES", "VOCAB", "TIMESTEPS", "BATCHES",
]

FEATURES = 3          # F of the feature-input cases
VOCAB = 12            # token-id cases: ids in [1, VOCAB), 0 = padding
TIMESTEPS = (9, 16)   # two T values, the dynamic time axis is exercised with both
BATCHES = (1, 6)      # two batch sizes, the dynamic batch axis is exercised with both
INPUT_NAME = "x"
OPSET = 17
# Raw feature scales for the cases whose model normalizes its own input: x_raw = offset + scale * x.
# The last feature's variance (1e-16) has sqrt 1e-8 < the backend epsilon 1e-7, so Keras divides by
# epsilon there: the clamp is exercised (without it that feature would come out 10x larger).
RAW_OFFSET = (100.0, -3.0, 0.0)
RAW_SCALE = (20.0, 0.1, 1e-8)


@dataclass(frozen=True)
class Case:
    """One configuration: a name, the layers after the input, and how the input looks.

    ``layers`` is called with no argument and returns fresh Keras layers applied in order after
    the input (and the Masking layer when ``masked``); a Dense(1, sigmoid) head is appended. An entry
    may also be a function of the tensor so far (a block with branches: GRU-FCN, residuals, attention).
    """

    name: str
    layers: Callable[[], list]
    masked: bool = False      # Masking(0.0) on right-padded float input
    tokens: bool = False      # (batch, time) int64 ids through Embedding(mask_zero=True)
    weight_scale: float = 1.0 # multiplies the random weights (unbounded relu gates need less)
    padded: bool = False      # right-padded float rows without the input Masking (a Masking inside ``layers``)
    raw: bool = False         # inputs mapped to RAW_OFFSET + RAW_SCALE * x, padding included (so padded
                              # steps normalize to exactly 0 with mean=RAW_OFFSET, variance=RAW_SCALE**2)

    @property
    def variable_length(self) -> bool:
        """Right-padded rows of varying length (a mask in the model)."""
        return self.masked or self.padded or self.tokens


def _gru(units: int = 8, **kw):
    import keras

    return keras.layers.GRU(units, **kw)


def _bi(merge_mode: str = "concat", **kw):
    import keras

    return keras.layers.Bidirectional(_gru(**kw), merge_mode=merge_mode)


def _layer(name: str, *args, **kw):
    import keras

    return getattr(keras.layers, name)(*args, **kw)


def _gru_fcn(x):
    """GRU-FCN: a GRU branch and a Conv1D + BatchNormalization + pooling branch, concatenated."""
    import keras

    conv = _layer("Conv1D", 4, 3, padding="same", activation="relu")(x)
    conv = _layer("GlobalAveragePooling1D")(_layer("BatchNormalization")(conv))
    return keras.layers.Concatenate()([_gru()(x), conv])


def _residual_gru_stack(x):
    """Two GRUs with LayerNormalization and residual Adds (units = the input width)."""
    import keras

    h = keras.layers.Dense(6)(x)                                                     # (batch, time, 6)
    h = keras.layers.Add()([h, _layer("LayerNormalization")(_gru(6, return_sequences=True)(h))])
    return keras.layers.Add()([h, _layer("LayerNormalization")(_gru(6, return_sequences=True)(h))])


def _pooled_views(x):
    """The last state, the mean and the max over time of one GRU's outputs, concatenated."""
    import keras

    h, last = _gru(return_sequences=True, return_state=True)(x)  # (batch, time, 8), (batch, 8)
    return keras.layers.Concatenate()([last, _layer("GlobalAveragePooling1D")(h), _layer("GlobalMaxPooling1D")(h)])


def _attention(kind: str):
    """Attention pooling over a GRU's outputs: the sequence as query, key and value, then the mean over time."""
    def block(x):
        h = _gru(return_sequences=True)(x)
        if kind == "MultiHeadAttention":
            a = _layer("MultiHeadAttention", num_heads=2, key_dim=4)(h, h)
        else:
            a = _layer(kind)([h, h])
        return _layer("GlobalAveragePooling1D")(a)
    return block


def _raw_normalization(adapt: bool = False):
    """Normalization of RAW_OFFSET + RAW_SCALE * x inputs: its mean/variance given exactly, or adapted
    on seeded raw data (then only close to them)."""
    import keras

    if not adapt:
        return keras.layers.Normalization(mean=list(RAW_OFFSET), variance=[s * s for s in RAW_SCALE])
    layer = keras.layers.Normalization(axis=-1)
    x = np.random.default_rng(123).standard_normal((64, 12, FEATURES))
    layer.adapt((np.asarray(RAW_OFFSET) + np.asarray(RAW_SCALE) * x).astype(np.float32))  # (64, 12, F)
    return layer


CASES: list[Case] = [
    Case("GRU reset_after=True", lambda: [_gru(reset_after=True)]),
    Case("GRU reset_after=False", lambda: [_gru(reset_after=False)]),
    Case("GRU use_bias=False", lambda: [_gru(use_bias=False)]),
    Case("GRU use_bias=False reset_after=False", lambda: [_gru(use_bias=False, reset_after=False)]),
    Case("2 stacked GRUs", lambda: [_gru(return_sequences=True), _gru()]),
    Case("3 stacked GRUs", lambda: [_gru(return_sequences=True), _gru(6, return_sequences=True), _gru(4)]),
    Case("GRU + GlobalAveragePooling1D", lambda: [_gru(return_sequences=True), _layer("GlobalAveragePooling1D")]),
    Case("GRU + GlobalMaxPooling1D", lambda: [_gru(return_sequences=True), _layer("GlobalMaxPooling1D")]),
    Case("GRU + Dense(6, relu) hidden", lambda: [_gru(), _layer("Dense", 6, activation="relu")]),
    Case("Bidirectional concat", lambda: [_bi("concat")]),
    Case("Bidirectional sum", lambda: [_bi("sum")]),
    Case("Bidirectional ave", lambda: [_bi("ave")]),
    Case("Bidirectional mul", lambda: [_bi("mul")]),
    Case("2 stacked Bidirectional + avg pool", lambda: [_bi("concat", return_sequences=True),
                                                        _bi("sum", return_sequences=True),
                                                        _layer("GlobalAveragePooling1D")]),
    Case("GRU go_backwards", lambda: [_gru(go_backwards=True)]),
    Case("GRU go_backwards return_sequences + GRU", lambda: [_gru(go_backwards=True, return_sequences=True), _gru()]),
    Case("activation=relu", lambda: [_gru(activation="relu")]),
    Case("activation=sigmoid", lambda: [_gru(activation="sigmoid")]),
    Case("activation=hard_sigmoid", lambda: [_gru(activation="hard_sigmoid")]),
    Case("recurrent_activation=hard_sigmoid", lambda: [_gru(recurrent_activation="hard_sigmoid")]),
    Case("recurrent_activation=tanh", lambda: [_gru(recurrent_activation="tanh")]),
    # relu gates are unbounded, so z > 1 makes h grow geometrically (inf/NaN in Keras and ORT alike)
    # at unit-variance weights; smaller weights keep it finite.
    Case("recurrent_activation=relu", lambda: [_gru(recurrent_activation="relu")], weight_scale=0.3),
    Case("dropout=0.3 recurrent_dropout=0.3", lambda: [_gru(dropout=0.3, recurrent_dropout=0.3)]),
    Case("Dropout layer between GRUs", lambda: [_gru(return_sequences=True), _layer("Dropout", 0.5), _gru()]),
    Case("Masking + GRU", lambda: [_gru()], masked=True),
    Case("Masking + GRU reset_after=False", lambda: [_gru(reset_after=False)], masked=True),
    Case("Masking + 2 stacked GRUs", lambda: [_gru(return_sequences=True), _gru()], masked=True),
    Case("Masking + Bidirectional concat", lambda: [_bi("concat")], masked=True),
    Case("Masking + stacked Bidirectional", lambda: [_bi("ave", return_sequences=True), _bi("mul")], masked=True),
    Case("Masking + GRU + avg pool", lambda: [_gru(return_sequences=True), _layer("GlobalAveragePooling1D")], masked=True),
    Case("Masking + Bidirectional + avg pool", lambda: [_bi("concat", return_sequences=True),
                                                        _layer("GlobalAveragePooling1D")], masked=True),
    Case("Masking + GRU + max pool", lambda: [_gru(return_sequences=True), _layer("GlobalMaxPooling1D")], masked=True),
    Case("Masking + 2 stacked GRUs + max pool", lambda: [_gru(return_sequences=True), _gru(return_sequences=True),
                                                         _layer("GlobalMaxPooling1D")], masked=True),
    Case("Masking + Bidirectional + max pool", lambda: [_bi("sum", return_sequences=True),
                                                        _layer("GlobalMaxPooling1D")], masked=True),
    Case("Masking + GRU go_backwards", lambda: [_gru(go_backwards=True)], masked=True),
    Case("Masking + GRU go_backwards return_sequences + avg pool",
         lambda: [_gru(go_backwards=True, return_sequences=True), _layer("GlobalAveragePooling1D")], masked=True),
    Case("Masking + GRU go_backwards return_sequences + GRU",
         lambda: [_gru(go_backwards=True, return_sequences=True), _gru()], masked=True),
    Case("Embedding(mask_zero) + GRU", lambda: [_layer("Embedding", VOCAB, 5, mask_zero=True), _gru()], tokens=True),
    Case("Embedding(mask_zero) + Bidirectional + avg pool",
         lambda: [_layer("Embedding", VOCAB, 5, mask_zero=True), _bi("concat", return_sequences=True),
                  _layer("GlobalAveragePooling1D")], tokens=True),
    Case("Embedding(mask_zero) + 2 stacked GRUs + max pool",
         lambda: [_layer("Embedding", VOCAB, 5, mask_zero=True), _gru(return_sequences=True),
                  _gru(return_sequences=True), _layer("GlobalMaxPooling1D")], tokens=True),
    Case("Normalization + GRU", lambda: [_raw_normalization(adapt=True), _gru()], raw=True),
    Case("Normalization + Bidirectional + avg pool",
         lambda: [_raw_normalization(), _bi("concat", return_sequences=True), _layer("GlobalAveragePooling1D")],
         raw=True),
    # Keras computes Masking's mask on the normalized values: padded raw steps equal RAW_OFFSET, the mean.
    Case("Normalization + Masking + GRU", lambda: [_raw_normalization(), _layer("Masking", 0.0), _gru()],
         raw=True, padded=True),
    Case("Masking + Normalization + Bidirectional + max pool",
         lambda: [_layer("Normalization", mean=[0.5, -1.0, 0.2], variance=[4.0, 0.25, 1.0]),
                  _bi("sum", return_sequences=True), _layer("GlobalMaxPooling1D")], masked=True),
    Case("Normalization(invert=True) + GRU",
         lambda: [_layer("Normalization", mean=[0.5, -1.0, 0.2], variance=[4.0, 0.25, 1e-16], invert=True), _gru()]),
    Case("Normalization(axis=None) + GRU", lambda: [_layer("Normalization", axis=None, mean=2.0, variance=9.0), _gru()]),
    # issue 27: the ONNX GRU op's other activations, and the layers around the GRU
    Case("activation=softsign", lambda: [_gru(activation="softsign")]),
    Case("activation=softplus", lambda: [_gru(activation="softplus")], weight_scale=0.5),
    Case("activation=elu", lambda: [_gru(activation="elu")]),
    Case("activation=leaky_relu", lambda: [_gru(activation="leaky_relu")], weight_scale=0.5),
    Case("activation=linear", lambda: [_gru(activation="linear")], weight_scale=0.5),
    Case("Conv1D causal dilation 2 + GRU", lambda: [_layer("Conv1D", 4, 3, padding="causal", dilation_rate=2), _gru()]),
    Case("Conv1D same + BatchNormalization + MaxPooling1D + GRU",
         lambda: [_layer("Conv1D", 4, 3, padding="same", activation="relu"), _layer("BatchNormalization"),
                  _layer("MaxPooling1D", 2), _gru()]),
    Case("SeparableConv1D + AveragePooling1D + GRU",
         lambda: [_layer("SeparableConv1D", 4, 3, padding="same"), _layer("AveragePooling1D", 2, padding="same"),
                  _gru()]),
    Case("LayerNormalization + GRU + LayerNormalization + avg pool",
         lambda: [_layer("LayerNormalization"), _gru(return_sequences=True), _layer("LayerNormalization"),
                  _layer("GlobalAveragePooling1D")]),
    Case("TimeDistributed(Dense) + GRU", lambda: [_layer("TimeDistributed", _layer("Dense", 5, activation="tanh")),
                                                  _gru()]),
    Case("GRU + Dense(gelu) + BatchNormalization + Dense(selu)",
         lambda: [_gru(), _layer("Dense", 6, activation="gelu"), _layer("BatchNormalization"),
                  _layer("Dense", 6, activation="selu")]),
    Case("GRU + Dense stack silu, elu, softplus, hard_silu, relu6",
         lambda: [_gru()] + [_layer("Dense", 6, activation=a) for a in ("silu", "elu", "softplus", "hard_silu", "relu6")]),
    Case("GRU + Dense stack gelu(tanh), tanh, sigmoid, softsign, leaky_relu, hard_sigmoid, linear",
         lambda: [_gru(), _layer("Dense", 6, activation=keras_gelu_tanh())] +
                 [_layer("Dense", 6, activation=a) for a in ("tanh", "sigmoid", "softsign", "leaky_relu",
                                                             "hard_sigmoid", "linear")]),
    Case("Conv1D valid strides 2 + GRU", lambda: [_layer("Conv1D", 4, 3, strides=2), _gru()]),
    Case("Conv1D groups 3 + GRU", lambda: [_layer("Conv1D", 6, 3, padding="same", groups=3), _gru()]),
    Case("DepthwiseConv1D + GRU", lambda: [_layer("DepthwiseConv1D", 3, padding="same", depth_multiplier=2), _gru()]),
    Case("UpSampling1D + ZeroPadding1D + Cropping1D + GRU",
         lambda: [_layer("UpSampling1D", 2), _layer("ZeroPadding1D", 1), _layer("Cropping1D", (2, 1)), _gru()]),
    Case("inference no-ops: SpatialDropout1D, GaussianNoise, GaussianDropout, ActivityRegularization + GRU",
         lambda: [_layer("SpatialDropout1D", 0.3), _layer("GaussianNoise", 0.5), _layer("GaussianDropout", 0.3),
                  _layer("ActivityRegularization", l1=0.01), _gru()]),
    Case("identity Reshape and Permute + GRU", lambda: [_layer("Reshape", (-1, FEATURES)), _layer("Permute", (1, 2)),
                                                        _gru()]),
    Case("GRU-FCN (GRU and Conv1D branches concatenated)", lambda: [_gru_fcn]),
    Case("residual GRU stack with LayerNormalization", lambda: [_residual_gru_stack, _layer("GlobalAveragePooling1D")]),
    Case("GRU last + mean + max pooled views concatenated", lambda: [_pooled_views]),
    Case("GRU + Attention pooling", lambda: [_attention("Attention")]),
    Case("GRU + AdditiveAttention pooling", lambda: [_attention("AdditiveAttention")]),
    Case("GRU + MultiHeadAttention pooling", lambda: [_attention("MultiHeadAttention")]),
]


def keras_gelu_tanh():
    """gelu in its tanh form (what keras.ops.gelu computes by default)."""
    import keras

    return keras.ops.gelu


def case_by_name(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)


def randomize_weights(model, seed: int, scale: float = 1.0) -> None:
    """Replace every trainable weight with seeded normal values scaled 1/sqrt(fan_in), biases 0.3;
    non-trainable weights (Normalization statistics) are kept.

    Glorot/orthogonal inits with zero biases keep a random GRU close to linear; these scales put
    the gates' pre-activations around unit variance, so they neither saturate nor vanish.
    """
    rng = np.random.default_rng(seed)
    new = []
    for w in model.weights:
        shape = tuple(w.shape)
        if not w.trainable:
            new.append(np.asarray(w.numpy()))
            continue
        if "embeddings" in w.path:
            values = rng.normal(0.0, 1.0, shape)
        elif len(shape) >= 2:
            values = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
        else:
            values = rng.normal(0.0, 0.3, shape)
        new.append((scale * values).astype(np.float32))
    model.set_weights(new)


def build_case(case: Case, seed: int = 0):
    """The Keras model of ``case`` with randomized weights: (batch, time, F) or (batch, time) ids -> (batch, 1)."""
    import keras

    keras.utils.set_random_seed(seed)
    if case.tokens:
        inputs = keras.Input(shape=(None,), dtype="int64", name=INPUT_NAME)  # (batch, time) ids
    else:
        inputs = keras.Input(shape=(None, FEATURES), name=INPUT_NAME)  # (batch, time, F)
    x = inputs
    if case.masked:
        x = keras.layers.Masking(mask_value=0.0)(x)
    with warnings.catch_warnings():
        # Keras warns that GlobalMaxPooling1D drops the mask; that is the behaviour being measured.
        warnings.filterwarnings("ignore", message=".*does not support masking.*")
        for layer in case.layers():
            x = layer(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="classifier")(x)  # (batch, 1)
    model = keras.Model(inputs, outputs, name="coverage_" + "".join(c if c.isalnum() else "_" for c in case.name))
    randomize_weights(model, seed, case.weight_scale)
    return model


def _right_pad(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero every step at or past each row's length: X (N, T, ...) right-padded."""
    X = X.copy()
    steps = np.arange(X.shape[1])[None, :]
    X[steps >= lengths[:, None]] = 0
    return X


def make_inputs(case: Case, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Named input batches for ``case``: random and real data, every (batch, T) in BATCHES x TIMESTEPS.

    Masked, padded and token cases get right-padded rows with lengths in [1, T]; the longest row is
    full. "Real" inputs are the default order task standardized like the build does (for tokens:
    feature 0 of it bucketed into ids 1..VOCAB-1). ``raw`` cases map every value, padding included,
    to RAW_OFFSET + RAW_SCALE * x.
    """
    rng = np.random.default_rng(seed)
    batches: list[tuple[str, np.ndarray]] = []
    for T in TIMESTEPS:
        task = make_order_task(max(BATCHES), T, max(FEATURES, 2), seed=seed + T)
        real_lengths = rng.integers(max(1, T // 3), T + 1, size=max(BATCHES))
        real_lengths[0] = T
        if case.variable_length:
            prep = fit_standardization(task.X, real_lengths)
            real = apply_preprocessing(task.X, prep, real_lengths)  # (N, T, F), zeros past the lengths
        else:
            real = apply_preprocessing(task.X, fit_standardization(task.X))  # (N, T, F)
        for B in BATCHES:
            lengths = real_lengths[:B]
            if case.tokens:
                bins = np.linspace(-2.0, 2.0, VOCAB - 2)
                ids_real = (np.digitize(real[:B, :, 0], bins) + 1).astype(np.int64)  # (B, T) in [1, VOCAB)
                ids_rand = rng.integers(1, VOCAB, size=(B, T)).astype(np.int64)
                batches.append((f"random ids B={B} T={T}", _right_pad(ids_rand, lengths)))
                batches.append((f"order task ids B={B} T={T}", _right_pad(ids_real, lengths)))
                continue
            rand = rng.standard_normal((B, T, FEATURES)).astype(np.float32)  # (B, T, F)
            if case.variable_length:
                rand = _right_pad(rand, lengths)
            batches.append((f"random B={B} T={T}", rand))
            batches.append((f"order task B={B} T={T}", np.ascontiguousarray(real[:B], dtype=np.float32)))
    if case.raw:
        offset, scale = np.asarray(RAW_OFFSET), np.asarray(RAW_SCALE)  # (F,)
        batches = [(name, (offset + scale * X).astype(np.float32)) for name, X in batches]
    return batches


def ort_session(proto: onnx.ModelProto, threads: int = 1):
    """onnxruntime CPU session on ``proto`` with ``threads`` intra-op threads (pipeline.runtime.sessions)."""
    from pipeline.runtime.sessions import open_session

    return open_session(proto.SerializeToString(), threads=threads, name=f"coverage graph {proto.graph.name!r}")


def run_onnx(session, X: np.ndarray) -> np.ndarray:
    """(N, T, F) or (N, T) -> (N,) probabilities from onnxruntime."""
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: X})[0], dtype=np.float32).reshape(-1)


def keras_run(model, X: np.ndarray) -> np.ndarray:
    """(N, T, F) or (N, T) -> (N,) probabilities from Keras in inference mode."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not support masking.*")
        return np.asarray(model(X, training=False), dtype=np.float32).reshape(-1)


def graph_ops(proto: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in proto.graph.node})


@dataclass
class CaseResult:
    name: str
    ops: list[str]
    gru_nodes: int
    max_abs_random: float
    max_abs_real: float
    per_batch: dict[str, float] = field(default_factory=dict)
    # unrolled batch graph (unmasked cases only; None = not applicable): max |Keras - unrolled| and
    # max |unrolled - native| over the same inputs, one unrolled graph per sequence length
    unrolled_vs_keras: Optional[float] = None
    unrolled_vs_native: Optional[float] = None
    unrolled_reason: str = ""            # why unroll_grus refused, when it did
    export_seconds: float = 0.0          # export_native wall time (build stage, this machine)
    stream: str = ""                     # "yes", or why stream.onnx cannot be built
    kernel: str = ""                     # "yes" when the fused kernel runs the graph, else its reason

    @property
    def max_abs(self) -> float:
        return max(self.max_abs_random, self.max_abs_real)

    @property
    def has_loop(self) -> bool:
        return any(op in ("Loop", "Scan") for op in self.ops)


def measure_case(case: Case, seed: int = 0) -> CaseResult:
    """Build, export natively, run both sides on every input batch; the errors per batch."""
    from pipeline.export.native import UnsupportedModelError, export_native
    from pipeline.export.scaling import LENGTHS_NAME, embed_preprocessing
    from pipeline.export.unrolled import unroll_grus

    import time

    from pipeline.export.native import stream_support
    from pipeline.runtime.fused.onnx_reader import match_fused, parse_model

    model = build_case(case, seed)
    start = time.perf_counter()
    proto = export_native(model, INPUT_NAME, OPSET)
    seconds = time.perf_counter() - start
    stream_reason = stream_support(model)
    # the kernel reads the artifact's graph: a masked (or token) model takes the lengths input there, padding
    # past each length with the mask value 0.0 (id 0) as pipeline.export.scaling writes it
    shipped = embed_preprocessing(proto, {"type": "none"}, masking=True) if case.masked or case.tokens else proto
    spec, why = match_fused(parse_model(shipped.SerializeToString()), INPUT_NAME, proto.graph.output[0].name,
                            LENGTHS_NAME if shipped is not proto else None)
    session = ort_session(proto)
    unrolled, unrolled_reason = {}, ""
    if not case.variable_length:
        try:  # layers that change the number of timesteps (Conv, pooling) have no per-step graph
            unrolled = {T: ort_session(unroll_grus(proto, T)) for T in TIMESTEPS}
        except UnsupportedModelError as e:
            unrolled, unrolled_reason = {}, str(e)
    per_batch: dict[str, float] = {}
    vs_keras, vs_native = [], []

    def worst(a: np.ndarray, b: np.ndarray) -> float:
        err = np.abs(a.astype(np.float64) - b)
        # A non-finite probability on either side is a failure, never a silent NaN comparison.
        return float(err.max()) if np.isfinite(err).all() else float("inf")

    for name, X in make_inputs(case, seed):
        p_keras = keras_run(model, X)
        p_onnx = run_onnx(session, X)
        assert p_keras.shape == p_onnx.shape == (X.shape[0],), (name, p_keras.shape, p_onnx.shape)
        per_batch[name] = worst(p_keras, p_onnx)
        if unrolled:
            p_unrolled = run_onnx(unrolled[X.shape[1]], X)
            vs_keras.append(worst(p_keras, p_unrolled))
            vs_native.append(worst(p_onnx, p_unrolled))
    rand = max(v for k, v in per_batch.items() if k.startswith("random"))
    real = max(v for k, v in per_batch.items() if k.startswith("order task"))
    return CaseResult(case.name, graph_ops(proto), sum(n.op_type == "GRU" for n in proto.graph.node),
                      rand, real, per_batch, max(vs_keras, default=None), max(vs_native, default=None),
                      unrolled_reason, seconds, "yes" if stream_reason is None else f"no: {stream_reason}",
                      "yes" if spec is not None else f"no: {why}")
