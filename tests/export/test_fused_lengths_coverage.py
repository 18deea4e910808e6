"""Variable-length graphs the exporter writes, on the fused kernel (issue 26): the last-state head (each row's
state at its own end; a reverse direction's at step 0), reverse (go_backwards) and Bidirectional layers with
every merge, stacked, max pooling over the padded sequence (Y's zeros past a row's length, or Keras' last output
carried there), k-way heads and Dense layers before the classifier.

Each case is a tiny Keras model behind Masking(-1) with random weights (``randomize_weights`` of
tests/coverage_cases.py), exported as gru-export ships a variable-length model (``export_native``, then
``embed_preprocessing`` with the lengths input). For every ISA variant and thread count, the kernel's
``run_lengths`` gives plain onnxruntime's bits on model.onnx fed x and lengths, on batches with real zeros,
lengths 1 and T, a block whose lengths all differ and N not a multiple of the block size
(``fused_support.padded_batches``); the Predictor runs it; damaged graphs are refused with a reason; token
models with lengths keep the graphs and say why. The TF-free side (numpy specs, run under the sanitizers):
tests/runtime/test_fused_lengths_heads.py.

Needs Keras (the build extra) to make the models; the kernel side imports none of it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402
import onnx  # noqa: E402

from pipeline.export.native import export_native  # noqa: E402
from pipeline.export.scaling import embed_preprocessing  # noqa: E402
from pipeline.runtime import Predictor, fused  # noqa: E402
from pipeline.runtime.fused.onnx_reader import FusedSpec, OnnxReadError, match_fused, parse_model  # noqa: E402
from pipeline.runtime.sessions import open_session  # noqa: E402
from coverage_cases import randomize_weights  # noqa: E402  (tests/coverage_cases.py)

from fused_support import ISAS, LIB, needs_library, padded_batches, write_folder  # noqa: E402

# Keras' GlobalMaxPooling1D ignores the mask (it says so in a UserWarning): the graph reproduces exactly that
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'global_max_pooling1d.*does not support masking:UserWarning")

F = 3
MASK_VALUE = -1.0  # the models' Masking value: zeros are data
OPSET = 17

# name -> (the layers after Masking, the head the spec must read, k, the classifier's activation); the
# layers are made by a function of the keras module
CASES = {
    "GRU last": (lambda k: [k.layers.GRU(20)], "last", 1, "sigmoid"),
    "GRU reset_after=False H=33 last": (lambda k: [k.layers.GRU(33, reset_after=False)], "last", 1, "sigmoid"),
    "go_backwards last": (lambda k: [k.layers.GRU(20, go_backwards=True)], "last", 1, "sigmoid"),
    "Bidirectional last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12))], "last", 1, "sigmoid"),
    "Bidirectional sum last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12), merge_mode="sum")], "last", 1,
                               "sigmoid"),
    "Bidirectional mul last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9), merge_mode="mul")], "last", 1,
                               "sigmoid"),
    "GRU avg": (lambda k: [k.layers.GRU(16, return_sequences=True), k.layers.GlobalAveragePooling1D()], "avg", 1,
                "sigmoid"),
    "go_backwards avg": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional avg": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12, return_sequences=True)),
                                     k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional ave avg": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12, return_sequences=True), merge_mode="ave"),
                                         k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "GRU max (last output carried)": (lambda k: [k.layers.GRU(24, return_sequences=True), k.layers.GlobalMaxPooling1D()],
                                      "max", 1, "sigmoid"),
    "GRU zero_output_for_mask max": (lambda k: [k.layers.GRU(8, return_sequences=True, zero_output_for_mask=True),
                                                k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "go_backwards max": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True)),
                                     k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional sum max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True), merge_mode="sum"),
                                         k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    # stacked: sequences handed on (go_backwards reversed in time, merged, concatenated)
    "go_backwards sequence + GRU last": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                                    k.layers.GRU(12)], "last", 1, "sigmoid"),
    "GRU sequence + go_backwards avg": (lambda k: [k.layers.GRU(10, return_sequences=True),
                                                   k.layers.GRU(12, go_backwards=True, return_sequences=True),
                                                   k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional mul sequence + GRU last": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(10, return_sequences=True), merge_mode="mul"), k.layers.GRU(12)], "last", 1,
        "sigmoid"),
    "Bidirectional ave sequence + reset_after=False Bidirectional sum avg": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True), merge_mode="ave"),
        k.layers.Bidirectional(k.layers.GRU(14, reset_after=False, return_sequences=True), merge_mode="sum"),
        k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "3 stacked mixed avg": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                       k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True)),
                                       k.layers.GRU(20, return_sequences=True), k.layers.GlobalAveragePooling1D()],
                            "avg", 1, "sigmoid"),
    "2 stacked Bidirectional ave max": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(5, return_sequences=True)),
        k.layers.Bidirectional(k.layers.GRU(17, return_sequences=True), merge_mode="ave"),
        k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional + go_backwards last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True)),
                                                     k.layers.GRU(7, go_backwards=True)], "last", 1, "sigmoid"),
    # k-way heads and Dense layers before the classifier
    "softmax k=5 Bidirectional last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12))], "last", 5, "softmax"),
    "softmax k=10 go_backwards avg": (lambda k: [k.layers.GRU(33, go_backwards=True, return_sequences=True),
                                                 k.layers.GlobalAveragePooling1D()], "avg", 10, "softmax"),
    "multilabel k=4 Bidirectional max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True)),
                                                    k.layers.GlobalMaxPooling1D()], "max", 4, "sigmoid"),
    "last + Dense(16, sigmoid) + Dense(8) softmax k=3": (lambda k: [
        k.layers.GRU(12, go_backwards=True), k.layers.Dense(16, activation="sigmoid"), k.layers.Dense(8)], "last", 3,
        "softmax"),
    "max + Dense(32, relu) binary": (lambda k: [k.layers.GRU(20, return_sequences=True), k.layers.GlobalMaxPooling1D(),
                                                k.layers.Dense(32, activation="relu")], "max", 1, "sigmoid"),
}


def _output(case: str) -> str:
    return "probability" if CASES[case][2] == 1 else "probabilities"


@lru_cache(maxsize=None)
def _model_bytes(case: str) -> bytes:
    """model.onnx of ``case`` as gru-export ships a variable-length model: x (batch, time, F) and lengths (batch,)
    -> Where(real, x, -1) -> Masking(-1) -> layers -> Dense(k, activation), random weights."""
    layers, _, k, activation = CASES[case]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, F), name="x")  # (batch, time, F)
    x = keras.layers.Masking(mask_value=MASK_VALUE)(inputs)
    for layer in layers(keras):
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(k, activation=activation)(x))  # (batch, k)
    randomize_weights(model, seed=sum(map(ord, case)))
    proto = embed_preprocessing(export_native(model, "x", OPSET), {"type": "none"}, masking=True, pad_value=MASK_VALUE)
    return proto.SerializeToString()


def _spec(case: str) -> FusedSpec:
    spec, why = match_fused(parse_model(_model_bytes(case)), "x", _output(case), "lengths")
    assert spec is not None, f"{case}: {why}"
    return spec


def test_the_cases_are_what_they_claim():
    for case, (_, head, k, activation) in CASES.items():
        spec = _spec(case)
        assert spec.lengths and (spec.head, spec.outputs, spec.activation) == (head, k, activation), case
        assert spec.max_reads_zeros == (head == "max" and case != "GRU max (last output carried)"
                                        and not case.startswith("max + Dense")), case
    assert [(la.direction, la.flip) for la in _spec("go_backwards avg").layers] == [("reverse", (True,))]
    assert [(la.direction, la.flip) for la in _spec("go_backwards last").layers] == [("reverse", (False,))]
    assert [(la.direction, la.merge) for la in _spec("Bidirectional ave sequence + reset_after=False Bidirectional "
                                                     "sum avg").layers] == [("bidirectional", "ave"),
                                                                            ("bidirectional", "sum")]
    assert [(la.direction, la.flip) for la in _spec("3 stacked mixed avg").layers] == [
        ("reverse", (True,)), ("bidirectional", (False, False)), ("forward", (False,))]
    assert [act for _, _, act in _spec("last + Dense(16, sigmoid) + Dense(8) softmax k=3").dense] == ["sigmoid", "linear"]


@needs_library
@pytest.mark.parametrize("case", list(CASES))
def test_run_lengths_is_model_onnx_bit_for_bit(case):
    """Every ISA variant and thread count: plain onnxruntime's bits on model.onnx fed x and lengths."""
    data = _model_bytes(case)
    sess = open_session(data, name=case)
    rng = np.random.default_rng(len(case))
    for T in (13, 1):
        for X, lens in padded_batches(T, rng):
            want = sess.run(None, {"x": X, "lengths": lens})[0]  # (N, k)
            for isa in ISAS:
                kernel = fused.FusedKernel(LIB, _spec(case), isa)
                for threads in (1, 2):
                    got = kernel.run_lengths(X, lens, threads=threads).reshape(want.shape)
                    bad = int((got != want).any(axis=1).sum())
                    assert not bad, f"{case} {isa} T={T} N={len(X)} threads={threads}: {bad} rows differ"


@needs_library
@pytest.mark.parametrize("case", ["Bidirectional max", "go_backwards avg", "3 stacked mixed avg"])
def test_garbage_past_the_lengths_and_row_order_change_nothing(case):
    """What lies past each length is never read, and a row's bits do not depend on the other rows (the order the
    kernel sorts them in, or the block they land in)."""
    kernel = fused.FusedKernel(LIB, _spec(case), ISAS[0])
    X, lens = padded_batches(11, np.random.default_rng(3))[0]
    want = kernel.run_lengths(X, lens, threads=2)
    G = np.where(np.isnan(X), np.float32(3e38), X)
    assert np.array_equal(kernel.run_lengths(G, lens, threads=2), want)
    perm = np.random.default_rng(4).permutation(len(X))
    assert np.array_equal(kernel.run_lengths(X[perm], lens[perm], threads=1), want[perm])


@needs_library
def test_predictor_runs_the_kernel_with_lengths(tmp_path):
    """A variable-length artifact of a newly covered shape: the Predictor's self-check passes and it runs the
    kernel, with the numbers of the onnxruntime path."""
    case = "softmax k=5 Bidirectional last"
    folder = write_folder(tmp_path / "m", onnx.load_from_string(_model_bytes(case)), task="multiclass",
                          class_names=[f"c{j}" for j in range(5)], masking=True, preprocessing={"type": "none"})

    p = Predictor.load(folder)
    X, lens = padded_batches(13, np.random.default_rng(5))[0]
    got = p.predict_proba(np.nan_to_num(X), lens)
    info = p.debug_info()["fused"]
    assert info["used"], info
    assert np.array_equal(got, Predictor.load(folder, fused=False).predict_proba(np.nan_to_num(X), lens))


def test_shapes_still_refused_say_why():
    """A variable-length token model (Embedding mask_zero) keeps the onnxruntime path with a one-line reason."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None,), name="x", dtype="int64")
    x = keras.layers.GRU(6)(keras.layers.Embedding(20, 4, mask_zero=True)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    proto = embed_preprocessing(export_native(model, "x", OPSET), {"type": "none"}, masking=True)
    spec, why = match_fused(parse_model(proto.SerializeToString()), "x", "probability", "lengths")
    assert spec is None and "token ids" in why and "\n" not in why, why


@pytest.mark.parametrize("case", ["Bidirectional sum last", "go_backwards max", "3 stacked mixed avg"])
def test_damaged_lengths_graphs_are_refused_or_read(case):
    """The reader's contract on the new recognisers (valid_last, the max over the padded sequence): a damaged
    variable-length model.onnx either fails to parse with OnnxReadError or match_fused returns a spec or a
    one-line reason, never another exception."""
    data = _model_bytes(case)
    rng = np.random.default_rng(len(case))
    tally = {"read error": 0, "refused": 0, "spec": 0}
    damaged = [data[:n] for n in range(0, len(data), max(1, len(data) // 150))]
    for _ in range(300):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), 3):
            b[pos] = int(rng.integers(0, 256))
        damaged.append(bytes(b))
    for d in damaged:
        try:
            graph = parse_model(d)
        except OnnxReadError:
            tally["read error"] += 1
            continue
        spec, why = match_fused(graph, "x", _output(case), "lengths")
        assert (spec is None) == bool(why) and "\n" not in why, why
        tally["spec" if spec is not None else "refused"] += 1
    assert tally["refused"] and tally["read error"], tally
