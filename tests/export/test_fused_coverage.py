"""The fused GRU kernel on the layer kinds beyond one forward GRU with reset_after=True (also max pooling,
Bidirectional merges sum/mul/ave and Dense layers between the pooling and the classifier):
go_backwards (ONNX direction "reverse"), Bidirectional (direction "bidirectional", merge concat),
reset_after=False (linear_before_reset=0) and stacked layers of these kinds (return_sequences
feeding the next), last-state and average heads; and the k-way heads (``K_CASES``: Dense(k, softmax)
for k = 3 and 10, Dense(4, sigmoid) multi-label) on last-state and average heads.

Each case is a tiny Keras model with random, non-saturating weights
(``randomize_weights`` of tests/coverage_cases.py), exported with the project's exporter
(``pipeline.export.native.export_native``). For every ISA variant this machine runs, the kernel
must be within 1e-6 (``SELF_CHECK_ATOL``) of model.onnx on random and stress inputs (+-100, zeros,
constants, batch 1, odd and large batch), give bit-identical rows whatever the batch split or thread
count, and a Predictor with graph="auto" must run it.

Needs Keras (the build extra) to make the models; the kernel side imports none of it.
"""

from __future__ import annotations

from functools import lru_cache
import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from pipeline.export.native import export_native  # noqa: E402
from pipeline.runtime import Predictor, fused  # noqa: E402
from pipeline.runtime.fused.onnx_reader import match_fused, parse_model  # noqa: E402
from pipeline.runtime.sessions import open_session  # noqa: E402
from coverage_cases import randomize_weights  # noqa: E402  (tests/coverage_cases.py)

from fused_support import (ATOL, ISAS, LIB, float64_proba as _float64_proba, needs_fma_cpu,  # noqa: E402
                           needs_library, stress_families as _stress, write_folder as _write, run_in_threads)

F = 3        # features
T = 11       # the trained length in the manifest; the kernel takes any T
OPSET = 17
VERIFY_ATOL = 1e-5  # the exporter's Keras-vs-ONNX tolerance, for the float64 sanity check


def _gru(units: int, **kw):
    return keras.layers.GRU(units, **kw)


def _bi(units: int, merge_mode: str = "concat", **kw):
    return keras.layers.Bidirectional(_gru(units, **kw), merge_mode=merge_mode)


def _normalization():
    return keras.layers.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 9.0])


# name -> (the layers after the input, the head the spec must read: "last", "avg" or "max")
CASES = {
    "go_backwards last": (lambda: [_gru(20, go_backwards=True)], "last"),
    "go_backwards avg": (lambda: [_gru(20, go_backwards=True, return_sequences=True),
                                  keras.layers.GlobalAveragePooling1D()], "avg"),
    "Normalization + go_backwards H=33 avg": (lambda: [_normalization(), _gru(33, go_backwards=True, return_sequences=True),
                                                       keras.layers.GlobalAveragePooling1D()], "avg"),
    "Bidirectional last": (lambda: [_bi(12)], "last"),
    "Bidirectional avg": (lambda: [_bi(12, return_sequences=True), keras.layers.GlobalAveragePooling1D()], "avg"),
    "Normalization + Bidirectional H=20 last": (lambda: [_normalization(), _bi(20)], "last"),
    "2 stacked GRUs H=40,64 last": (lambda: [_gru(40, return_sequences=True), _gru(64)], "last"),
    "go_backwards sequences + GRU avg": (lambda: [_gru(10, go_backwards=True, return_sequences=True),
                                                  _gru(12, return_sequences=True),
                                                  keras.layers.GlobalAveragePooling1D()], "avg"),
    "go_backwards sequences + GRU last": (lambda: [_gru(10, go_backwards=True, return_sequences=True), _gru(12)],
                                          "last"),
    "Bidirectional + Dropout + go_backwards last": (lambda: [_bi(9, return_sequences=True), keras.layers.Dropout(0.3),
                                                             _gru(7, go_backwards=True)], "last"),
    "2 stacked Bidirectional last": (lambda: [_bi(5, return_sequences=True), _bi(17)], "last"),
    "Normalization + 3 stacked mixed avg": (lambda: [_normalization(), _gru(10, go_backwards=True, return_sequences=True),
                                                     _bi(7, return_sequences=True), _gru(20, return_sequences=True),
                                                     keras.layers.GlobalAveragePooling1D()], "avg"),
    "reset_after=False last": (lambda: [_gru(20, reset_after=False)], "last"),
    "reset_after=False H=64 avg": (lambda: [_gru(64, reset_after=False, return_sequences=True),
                                            keras.layers.GlobalAveragePooling1D()], "avg"),
    "reset_after=False go_backwards use_bias=False last": (lambda: [_gru(9, reset_after=False, go_backwards=True,
                                                                         use_bias=False)], "last"),
    "Normalization + reset_after=False Bidirectional avg": (lambda: [
        _normalization(), _bi(12, reset_after=False, return_sequences=True), keras.layers.GlobalAveragePooling1D()], "avg"),
    "reset_after False, True, False stacked last": (lambda: [
        _gru(10, reset_after=False, go_backwards=True, return_sequences=True), _bi(7, return_sequences=True),
        _gru(20, reset_after=False)], "last"),
    "GRU H=24 max": (lambda: [_gru(24, return_sequences=True), keras.layers.GlobalMaxPooling1D()], "max"),
    # Bidirectional merges other than concat: last states, mean, max, and a merged sequence into the next layer
    "Bidirectional sum last": (lambda: [_bi(12, merge_mode="sum")], "last"),
    "Bidirectional mul avg": (lambda: [_bi(16, merge_mode="mul", return_sequences=True),
                                       keras.layers.GlobalAveragePooling1D()], "avg"),
    "Normalization + Bidirectional ave max": (lambda: [_normalization(), _bi(20, merge_mode="ave", return_sequences=True),
                                                       keras.layers.GlobalMaxPooling1D()], "max"),
    "Bidirectional ave sequence + reset_after=False Bidirectional sum avg": (lambda: [
        _bi(9, merge_mode="ave", return_sequences=True),
        _bi(14, merge_mode="sum", reset_after=False, return_sequences=True), keras.layers.GlobalAveragePooling1D()],
        "avg"),
    "Bidirectional mul sequence + GRU last": (lambda: [_bi(10, merge_mode="mul", return_sequences=True), _gru(12)],
                                              "last"),
    "Normalization + go_backwards + Bidirectional max": (lambda: [
        _normalization(), _gru(10, go_backwards=True, return_sequences=True), _bi(12, return_sequences=True),
        keras.layers.GlobalMaxPooling1D()], "max"),
}


# the k-way heads: name -> (the layers after the input, the head, k, the Dense activation)
K_CASES = {
    "softmax k=3 last": (lambda: [_gru(20)], "last", 3, "softmax"),
    "softmax k=3 avg": (lambda: [_gru(20, return_sequences=True), keras.layers.GlobalAveragePooling1D()], "avg", 3,
                        "softmax"),
    "softmax k=10 last": (lambda: [_normalization(), _bi(12)], "last", 10, "softmax"),
    "softmax k=10 avg": (lambda: [_gru(64, return_sequences=True), keras.layers.GlobalAveragePooling1D()], "avg", 10,
                         "softmax"),
    "softmax k=10 stacked avg": (lambda: [_gru(10, go_backwards=True, return_sequences=True),
                                          _gru(33, reset_after=False, return_sequences=True),
                                          keras.layers.GlobalAveragePooling1D()], "avg", 10, "softmax"),
    "multilabel k=4 last": (lambda: [_gru(20, go_backwards=True)], "last", 4, "sigmoid"),
    "multilabel k=4 avg": (lambda: [_normalization(), _bi(9, return_sequences=True),
                                    keras.layers.GlobalAveragePooling1D()], "avg", 4, "sigmoid"),
    # Dense layers between the pooling and the classifier (relu, sigmoid, linear; Dropout between them)
    "avg + Dense(32, relu) binary": (lambda: [_gru(20, return_sequences=True), keras.layers.GlobalAveragePooling1D(),
                                              keras.layers.Dense(32, activation="relu")], "avg", 1, "sigmoid"),
    "Bidirectional last + Dense(16, sigmoid) + Dropout + Dense(8) softmax k=3": (lambda: [
        _bi(12), keras.layers.Dense(16, activation="sigmoid"), keras.layers.Dropout(0.2), keras.layers.Dense(8)],
        "last", 3, "softmax"),
    "max + Dense(64, relu) + Dense(24, relu) multilabel k=4": (lambda: [
        _normalization(), _gru(40, return_sequences=True), keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dense(24, activation="relu")], "max", 4, "sigmoid"),
}


def _case(case: str):
    """(layers, head, k, activation) of a CASES or K_CASES entry (CASES: Dense(1, sigmoid))."""
    return K_CASES[case] if case in K_CASES else (*CASES[case], 1, "sigmoid")


def _output(case: str) -> str:
    return "probability" if _case(case)[2] == 1 else "probabilities"


@lru_cache(maxsize=None)
def _model_proto(case: str):
    """model.onnx of ``case``: Input (batch, time, F) -> layers -> Dense(k, activation), random weights."""
    layers, _, k, activation = _case(case)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, F), name="x")  # (batch, time, F)
    x = inputs
    for layer in layers():
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(k, activation=activation)(x))  # (batch, k)
    randomize_weights(model, seed=sum(map(ord, case)))
    return export_native(model, "x", OPSET)


def _model_bytes(case: str) -> bytes:
    return _model_proto(case).SerializeToString()


def _spec(case: str):
    spec, why = match_fused(parse_model(_model_bytes(case)), "x", _output(case))
    assert spec is not None, f"{case}: {why}"
    return spec


def _errors(case: str, isa: str) -> dict[str, float]:
    """max |kernel - model.onnx| per input family (the generic C variant on at most 64 rows: it is slow)."""
    data = _model_bytes(case)
    kernel, sess = fused.FusedKernel(LIB, _spec(case), isa), open_session(data, name=case)
    errors = {}
    rng = np.random.default_rng(len(case))
    families = {f"T={T} {k}": v for k, v in _stress(T, F, rng).items()}
    families["T=200 random"] = rng.standard_normal((9, 200, F)).astype(np.float32)  # long mean: summation order
    families["T=1 random"] = rng.standard_normal((5, 1, F)).astype(np.float32)
    for name, X in families.items():
        if isa == "generic" and len(X) > 64:
            X = X[:64]
        want = sess.run(None, {"x": X})[0]
        got = kernel.run(X, threads=2).astype(np.float64).reshape(want.shape)  # (N, 1) or (N, k)
        errors[name] = float(np.abs(got - want).max()) if np.isfinite(got).all() else float("inf")
    return errors


def test_the_cases_are_what_they_claim():
    """The exported graphs have the GRU options the case names, and the spec reads them back."""
    for case in (*CASES, *K_CASES):
        _, head, k, activation = _case(case)
        spec = _spec(case)
        assert (spec.head, spec.outputs, spec.activation, spec.binary) == (head, k, activation, k == 1), case
    spec = _spec("go_backwards last")
    assert [(la.direction, la.flip) for la in spec.layers] == [("reverse", (False,))] and spec.head == "last"
    spec = _spec("go_backwards avg")  # the exporter pools the reversed sequence: processing order
    assert spec.head == "avg" and [la.flip for la in spec.layers] == [(True,)]
    spec = _spec("Normalization + go_backwards H=33 avg")
    assert [op for op, _ in spec.prefix] == ["Sub", "Div"] and spec.layers[0].hidden == 33
    for case in ("Bidirectional last", "Bidirectional avg"):
        spec = _spec(case)
        assert [(la.direction, la.directions, la.flip) for la in spec.layers] == [("bidirectional", 2, (False, False))]
        assert spec.head_w.shape == (24, 1)
    assert _spec("softmax k=10 last").head_w.shape == (24, 10) and _spec("multilabel k=4 avg").head_w.shape == (18, 4)
    spec = _spec("go_backwards sequences + GRU last")  # the reversed sequence is handed on in processing order
    assert [(la.direction, la.flip) for la in spec.layers] == [("reverse", (True,)), ("forward", (False,))]
    spec = _spec("Normalization + 3 stacked mixed avg")
    assert [(la.direction, la.features, la.hidden, la.flip) for la in spec.layers] == [
        ("reverse", 3, 10, (True,)), ("bidirectional", 10, 7, (False, False)), ("forward", 14, 20, (False,))]
    assert [la.directions for la in _spec("2 stacked Bidirectional last").layers] == [2, 2]
    assert [la.linear_before_reset for la in _spec("reset_after False, True, False stacked last").layers] == [0, 1, 0]
    assert [la.linear_before_reset for la in _spec("reset_after=False H=64 avg").layers] == [0]
    assert not _spec("reset_after=False go_backwards use_bias=False last").layers[0].B.any()
    assert [(W.shape, act) for W, _, act in _spec("max + Dense(64, relu) + Dense(24, relu) multilabel k=4").dense] == [
        ((40, 64), "relu"), ((64, 24), "relu")]
    assert [act for _, _, act in _spec("Bidirectional last + Dense(16, sigmoid) + Dropout + Dense(8) softmax k=3").dense] \
        == ["sigmoid", "linear"]


def test_bidirectional_merges_are_read_as_written():
    assert [la.merge for la in _spec("Bidirectional ave sequence + reset_after=False Bidirectional sum avg").layers] \
        == ["ave", "sum"]
    assert [(la.merge, la.width) for la in _spec("Bidirectional mul sequence + GRU last").layers] == [
        ("mul", 10), ("concat", 12)]
    assert _spec("Bidirectional sum last").head_w.shape == (12, 1) and _spec("Bidirectional mul avg").layers[0].merge == "mul"


@needs_library
def test_a_tanh_dense_layer_is_read_and_other_activations_keep_the_onnxruntime_path():
    """Dense(tanh) is read (the kernel reproduces onnxruntime's Tanh op: tests/runtime/test_fused_tokens_tanh.py);
    an activation the kernel does not cover keeps the onnxruntime path with the reason."""
    keras.utils.set_random_seed(0)
    for act, op in (("tanh", None), ("hard_sigmoid", "HardSigmoid")):
        inputs = keras.Input(shape=(None, F), name="x")
        x = keras.layers.Dense(8, activation=act)(keras.layers.GRU(6)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        data = export_native(model, "x", OPSET).SerializeToString()
        spec, why = match_fused(parse_model(data), "x", "probability")
        if op:
            assert spec is None and f"activation {op}" in why, why
            continue
        assert spec is not None and [a for _, _, a in spec.dense] == ["tanh"], why
        X = np.random.default_rng(1).standard_normal((37, T, F)).astype(np.float32) * 3
        want = open_session(data, name="tanh").run(None, {"x": X})[0].reshape(-1)
        for isa in ISAS:
            got = fused.FusedKernel(LIB, spec, isa).run(X)
            assert np.abs(got - want).max() <= ATOL, isa
            if "avx2" in ISAS:  # onnxruntime runs its FMA kernels (Tanh: TanhKernelFma3): the same bits
                assert np.array_equal(got, want), isa


@needs_library
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", [*CASES, *K_CASES])
def test_kernel_matches_model_onnx(case, isa):
    errors = _errors(case, isa)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= ATOL, f"{case} {isa}: max |kernel - model.onnx| {errors[worst]:.3g} on {worst}"


@needs_library
@needs_fma_cpu
@pytest.mark.parametrize("case", [*CASES, *K_CASES])
def test_kernel_reproduces_model_onnx_bit_for_bit(case):
    """Where onnxruntime runs its FMA kernels, every case and variant gives model.onnx's bits
    (Bidirectional's mean included: its backward states are summed in time order, as ReduceMean does;
    the k-way heads' Gemm, Sigmoid and MLAS softmax included)."""
    for isa in ISAS:
        errors = _errors(case, isa)
        assert not any(errors.values()), f"{case} {isa}: {errors}"


@needs_library
@pytest.mark.parametrize("case", [*CASES, *K_CASES])
def test_kernel_is_closer_to_float64_than_a_wrong_reading(case):
    """The kernel computes the network the case names: within Keras-vs-ONNX verification's 1e-5 of the
    float64 evaluation, and reading the directions, flips or reset_after as anything else is far off."""
    spec = _spec(case)
    X = np.random.default_rng(3).standard_normal((17, T, F)).astype(np.float32)
    got = fused.FusedKernel(LIB, spec, ISAS[0]).run(X).astype(np.float64)
    Xs = X
    for op, c in spec.prefix:  # the graph's own scaling, which _float64_proba leaves out
        Xs = {"Sub": np.subtract, "Div": np.divide, "Mul": np.multiply, "Add": np.add}[op](Xs, c, dtype=np.float32)
    assert np.abs(got - _float64_proba(spec, Xs)).max() <= VERIFY_ATOL
    # the hand-on order alone matters too (the last layer's flip only orders the mean's sum: the
    # bit-for-bit test covers it)
    if any(any(la.flip) for la in spec.layers[:-1]):
        flips = [la.flip for la in spec.layers]
        for layer in spec.layers[:-1]:
            layer.flip = (False,) * layer.directions
        assert np.abs(got - _float64_proba(spec, Xs)).max() > 1e-3
        for layer, flip in zip(spec.layers, flips):
            layer.flip = flip
    if any(la.linear_before_reset == 0 for la in spec.layers):  # reset_after=False read as True: far off
        for layer in spec.layers:
            layer.linear_before_reset = 1
        assert np.abs(got - _float64_proba(spec, Xs)).max() > 1e-3
        for layer, original in zip(spec.layers, _spec(case).layers):
            layer.linear_before_reset = original.linear_before_reset
    if all(la.direction == "forward" for la in spec.layers):
        return
    for layer in spec.layers:  # every direction read forward, nothing handed on reversed
        layer.direction, layer.flip = "forward", (False,) * layer.directions
    assert np.abs(got - _float64_proba(spec, Xs)).max() > 1e-3


@needs_library
@pytest.mark.parametrize("case", [*CASES, *K_CASES])
def test_rows_do_not_depend_on_batch_split_or_threads(case):
    X = np.random.default_rng(9).standard_normal((301, T, F)).astype(np.float32)
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, _spec(case), isa)
        whole = kernel.run(X, threads=2)
        assert np.array_equal(whole, kernel.run(X, threads=1)), isa
        parts = np.concatenate([kernel.run(X[i:i + n], threads=2) for i, n in
                                ((0, 1), (1, 2), (3, 5), (8, 7), (15, 64), (79, 222))])
        assert np.array_equal(whole, parts), isa


@needs_library
@pytest.mark.parametrize("case", ["go_backwards avg", "Bidirectional last", "2 stacked GRUs H=40,64 last",
                                  "reset_after=False H=64 avg"])
def test_one_to_three_rows_on_two_threads(case):
    """One, two or three rows asked to use two threads give the same bits as one thread."""
    X = np.random.default_rng(12).standard_normal((8, T, F)).astype(np.float32) * 3
    cuts = ((0, 1), (1, 2), (3, 3), (6, 2))
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, _spec(case), isa)
        alone = [kernel.run(X[i:i + n], threads=1) for i, n in cuts]
        assert all(np.array_equal(a, kernel.run(X[i:i + n], threads=2)) for a, (i, n) in zip(alone, cuts)), isa


@needs_library
def test_concurrent_calls_on_a_stacked_model_give_identical_outputs():
    """Each call has its own sequence buffers between layers: 6 Python threads at once, same bits."""

    kernel = fused.FusedKernel(LIB, _spec("Normalization + 3 stacked mixed avg"), ISAS[0])
    rng = np.random.default_rng(13)
    batches = [rng.standard_normal((n, T, F)).astype(np.float32) for n in (1, 7, 64, 150)]
    want = [kernel.run(X, threads=2) for X in batches]
    errors: list[str] = []

    def work(k: int) -> None:
        for rep in range(6):
            i = (k + rep) % len(batches)
            if not np.array_equal(kernel.run(batches[i], threads=2), want[i]):
                errors.append(f"thread {k} batch {i}")

    run_in_threads(work, 6)
    assert not errors, errors


@needs_library
@pytest.mark.parametrize("case", [*CASES, *K_CASES])
def test_predictor_uses_the_kernel(case, tmp_path):
    _, _, k, activation = _case(case)
    task = "binary" if k == 1 else "multiclass" if activation == "softmax" else "multilabel"
    folder = _write(tmp_path / "m", _model_proto(case), task=task,
                    class_names=None if k == 1 else [f"c{j}" for j in range(k)])
    X = np.random.default_rng(4).standard_normal((70, T, F)).astype(np.float32)
    p = Predictor.load(folder)
    got = p.predict_proba(X)
    info = p.debug_info()["fused"]
    assert info["used"] and info["isa"] == ISAS[0], info
    assert info["checks"][ISAS[0]]["max_abs_vs_model_onnx"] <= ATOL
    want = Predictor.load(folder, fused=False).predict_proba(X)
    assert got.shape == want.shape == ((70,) if _case(case)[2] == 1 else (70, _case(case)[2]))
    assert np.abs(got - want).max() <= ATOL


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave"])
@pytest.mark.parametrize("pooled", [False, True])
def test_other_bidirectional_merges_run_on_the_kernel_in_the_predictor(merge_mode, pooled, tmp_path):
    """Bidirectional merge_mode sum, mul, ave (formerly kept on the onnxruntime graphs): the Predictor runs the
    kernel after its self-check, with the numbers of the graphs (bit for bit where onnxruntime runs FMA kernels)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, F), name="x")
    x = _bi(6, merge_mode, return_sequences=pooled)(inputs)
    if pooled:
        x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    spec, why = match_fused(parse_model(export_native(model, "x", OPSET).SerializeToString()), "x", "probability")
    assert spec is not None and spec.layers[0].merge == merge_mode, why
    folder = _write(tmp_path / "m", export_native(model, "x", OPSET))
    p = Predictor.load(folder)
    X = np.random.default_rng(8).standard_normal((5, T, F)).astype(np.float32)
    got, want = p.predict_proba(X), Predictor.load(folder, fused=False).predict_proba(X)
    assert p.debug_info()["fused"]["used"], p.debug_info()["fused"]
    assert np.array_equal(got, want) if "avx2" in ISAS else np.abs(got - want).max() <= ATOL


def report() -> dict[str, dict[str, float]]:
    """{case: {isa: max |kernel - model.onnx| over every family}} (for a closing note)."""
    return {case: {isa: max(_errors(case, isa).values()) for isa in ISAS} for case in (*CASES, *K_CASES)}


if __name__ == "__main__":  # python tests/runtime/test_fused_coverage.py: the error table
    for case, per_isa in report().items():
        print(f"{case:45s}", "  ".join(f"{isa} {err:.3g}" for isa, err in per_isa.items()))
