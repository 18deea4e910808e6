"""The fused GRU kernel (pipeline.runtime.fused): model.onnx's numbers for every ISA variant this
machine runs, on random and stress inputs (bit for bit where onnxruntime runs its FMA kernels,
within 1e-6 everywhere); the input scaling and NaN/Inf scan in the kernel; the fallbacks to today's onnxruntime
graphs (no library, a library that fails its self-check or cannot load, a layer option the kernel
does not cover); thread safety; nothing printed on stdout.

Graph variants are made by editing tests/tiny_models.py's ModelProto in place (no onnx import here);
the shared helpers are in tests/fused_support.py.
"""

from __future__ import annotations


from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError, NonFiniteInput
from pipeline.runtime import Predictor, fused
from pipeline.runtime.fused.onnx_reader import FusedLayer, FusedSpec, match_fused, parse_model
from pipeline.runtime.sessions import open_session

from fused_support import (ATOL, EXPORTED, ISAS, LIB, needs_fma_cpu, needs_library,  # noqa: F401
                           float64_proba as _float64_proba, kernel_for as _kernel, stress_families as _stress,
                           write_folder as _write, run_in_threads)
from tiny_models import tiny_model_proto


def _set_attr(node, name: str, value) -> None:
    """Set an int, string or list-of-strings attribute of a NodeProto without the onnx package."""
    for a in node.attribute:
        if a.name == name:
            break
    else:
        a = node.attribute.add()
        a.name = name
    if isinstance(value, int):
        a.type, a.i = 2, value       # AttributeProto.INT
    elif isinstance(value, list):
        a.type = 8                   # AttributeProto.STRINGS
        a.strings.extend(v.encode() for v in value)
    else:
        a.type, a.s = 3, value.encode()  # AttributeProto.STRING


def _with_scaling(proto, sub: np.ndarray, div: np.ndarray):
    """Prepend x -> Sub(x, sub) -> Div(., div) to the tiny graph (scaling inside the graph)."""
    F = sub.size
    for name, arr in (("in_sub", sub), ("in_div", div)):
        t = proto.graph.initializer.add()
        t.name, t.data_type, t.raw_data = name, 1, arr.astype("<f4").tobytes()
        t.dims.extend([F])
    nodes = list(proto.graph.node)
    nodes[0].input[0] = "x_div"
    del proto.graph.node[:]
    for op, ins, out in (("Sub", ["x", "in_sub"], "x_sub"), ("Div", ["x_sub", "in_div"], "x_div")):
        n = proto.graph.node.add()
        n.op_type = op
        n.input.extend(ins)
        n.output.append(out)
    proto.graph.node.extend(nodes)
    return proto


# ---------------------------------------------------------------------------- exactness per ISA
@needs_library
@pytest.mark.parametrize("isa", ISAS)
def test_kernel_matches_model_onnx_on_the_committed_model(isa):
    """Average head, H=64, F=8: every family within 1e-6 of model.onnx (the native graph)."""
    data = (EXPORTED / "model.onnx").read_bytes()
    kernel, sess = _kernel(data, isa), open_session(EXPORTED / "model.onnx")
    rng = np.random.default_rng(1)
    for name, X in _stress(50, 8, rng).items():
        if isa == "generic" and len(X) > 64:
            X = X[:64]  # the scalar C path is slow; its arithmetic is the same on every row
        want = sess.run(None, {"x": X})[0].reshape(-1)
        got = kernel.run(X, threads=2)
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= ATOL, f"{isa} {name}: max |kernel - model.onnx| {err:.3g}"
    # other lengths than the trained one (the kernel takes any T)
    X = rng.standard_normal((5, 7, 8)).astype(np.float32)
    assert np.abs(kernel.run(X) - sess.run(None, {"x": X})[0].reshape(-1)).max() <= ATOL


@needs_library
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("features,units", [(3, 4), (5, 20), (1, 33)])
@pytest.mark.parametrize("option", [None, ("direction", "reverse"), ("linear_before_reset", 0)])
def test_kernel_matches_model_onnx_on_last_state_models(isa, features, units, option):
    """Last-state head; hidden sizes that are not a multiple of the 16-wide tile (zero padding); the
    GRU forward, reverse, or with linear_before_reset=0 (this graph's recurrent bias is nonzero, so
    onnxruntime's Wbn + Rbn sum is exercised too).

    These random-weight models on uniform +-100 inputs are ill-conditioned in float32: there
    model.onnx itself is up to 1.4e-6 from a float64 evaluation, so the kernel must be at least as
    close to float64 as model.onnx is; on every other family, within 1e-6 of model.onnx."""
    proto = tiny_model_proto(features, units, seed=units)
    if option:
        _set_attr(next(n for n in proto.graph.node if n.op_type == "GRU"), *option)
    data = proto.SerializeToString()
    kernel, sess = _kernel(data, isa), open_session(data, name="tiny")
    for name, X in _stress(13, features, np.random.default_rng(units)).items():
        want = sess.run(None, {"x": X})[0].reshape(-1)
        got = kernel.run(X, threads=2).astype(np.float64)
        err = float(np.abs(got - want).max())
        if name == "uniform +-100":
            exact = _float64_proba(kernel.spec, X)
            ours, theirs = float(np.abs(got - exact).max()), float(np.abs(want - exact).max())
            assert ours <= max(ATOL, theirs), f"{isa}: |kernel - float64| {ours:.3g}, |model.onnx - float64| {theirs:.3g}"
        else:
            assert err <= ATOL, f"{isa} {name}: max |kernel - model.onnx| {err:.3g}"


@needs_library
@needs_fma_cpu
@pytest.mark.parametrize("isa", ISAS)
def test_kernel_reproduces_model_onnx_bit_for_bit(isa):
    """The committed model and tiny last-state models (forward, reverse, linear_before_reset=0,
    hidden sizes off the 16-wide tile) on every stress family, +-100 included: not one bit differs
    from onnxruntime running model.onnx."""
    cases = [(EXPORTED / "model.onnx").read_bytes()]
    for features, units in ((3, 4), (1, 33)):
        for option in (None, ("direction", "reverse"), ("linear_before_reset", 0)):
            proto = tiny_model_proto(features, units, seed=units)
            if option:
                _set_attr(next(n for n in proto.graph.node if n.op_type == "GRU"), *option)
            cases.append(proto.SerializeToString())
    for data in cases:
        kernel, sess = _kernel(data, isa), open_session(data, name="exact")
        T = 50 if data is cases[0] else 13
        for name, X in _stress(T, kernel.spec.features, np.random.default_rng(3)).items():
            if isa == "generic" and len(X) > 64:
                X = X[:64]
            got, want = kernel.run(X, threads=2), sess.run(None, {"x": X})[0].reshape(-1)
            assert np.array_equal(got, want), (f"{isa} {name}: {int((got != want).sum())} of {len(X)} rows differ, "
                                               f"max {np.abs(got.astype(np.float64) - want).max():.3g}")


# ---------------------------------------------------------------------------- k-way heads
def _k_way_proto(task: str, k: int, features: int = 3, units: int = 20, spread: float = 1.0):
    """The tiny graph with a Dense(k) + Softmax (``multiclass``) or Dense(k, sigmoid) (``multilabel``)
    head, its Dense weights multiplied by ``spread`` (a wide spread: softmax inputs more than 87
    apart, so some exp() values are subnormal or zero)."""
    proto = tiny_model_proto(features, units, seed=k + units, task=task, n_classes=k)
    if spread != 1.0:
        t = next(t for t in proto.graph.initializer if t.name == "dense_w")
        t.raw_data = (np.frombuffer(t.raw_data, "<f4") * np.float32(spread)).astype("<f4").tobytes()
    return proto


# (task, k, units, spread): softmax over 3, 10 (one masked 16-lane vector in MLAS' AVX512F kernel,
# one full and one masked 8-lane vector in its FMA3 kernel), 40 and 100 units (several vectors; 100
# runs the 48-value loop), wide spreads (subnormal and zero exp() values); 4 and 10 sigmoids
K_WAY = [("multiclass", 3, 4, 1.0), ("multiclass", 10, 20, 1.0), ("multiclass", 10, 20, 60.0),
         ("multiclass", 40, 33, 1.0), ("multiclass", 100, 16, 40.0), ("multilabel", 4, 8, 1.0),
         ("multilabel", 10, 20, 30.0)]


def _k_way_ids(case) -> str:
    task, k, units, spread = case
    return f"{task}-k{k}-H{units}" + (f"-x{spread:g}" if spread != 1.0 else "")


@needs_library
def test_k_way_heads_are_read_from_the_graph():
    """match_fused reads Gemm to k units then Softmax or Sigmoid: (D*H, k) weights, (k,) bias, the
    activation; the kernel returns (N, k) for them and (N,) for the binary head."""
    for task, k in (("multiclass", 3), ("multiclass", 10), ("multilabel", 4)):
        proto = _k_way_proto(task, k)
        spec, why = match_fused(parse_model(proto.SerializeToString()), "x", "probabilities")
        assert spec is not None, why
        assert spec.outputs == k and spec.head_w.shape == (20, k) and spec.head_b.shape == (k,) and not spec.binary
        assert spec.activation == {"multiclass": "softmax", "multilabel": "sigmoid"}[task]
        dense_b = next(t for t in proto.graph.initializer if t.name == "dense_b")
        assert np.array_equal(spec.head_b, np.frombuffer(dense_b.raw_data, "<f4"))
        X = np.zeros((5, 4, 3), np.float32)
        assert fused.FusedKernel(LIB, spec, ISAS[0]).run(X).shape == (5, k)
    spec, _ = match_fused(parse_model(tiny_model_proto(3, 4).SerializeToString()), "x", "probability")
    assert spec.binary and spec.outputs == 1 and spec.head_w.shape == (4, 1)
    assert fused.FusedKernel(LIB, spec, ISAS[0]).run(np.zeros((5, 4, 3), np.float32)).shape == (5,)


@pytest.mark.parametrize("edit,reason", [
    (lambda n: _set_attr(n, "axis", 0), "the Softmax is over axis 0"),
    (lambda n: setattr(n, "op_type", "LogSoftmax"), "the output is not a Sigmoid or Softmax"),
    (lambda n: setattr(n, "op_type", "Relu"), "the output is not a Sigmoid or Softmax"),
])
def test_other_k_way_heads_keep_the_onnxruntime_path(edit, reason):
    proto = _k_way_proto("multiclass", 5)
    edit(proto.graph.node[-1])
    spec, why = match_fused(parse_model(proto.SerializeToString()), "x", "probabilities")
    assert spec is None and reason in why, why


@needs_library
def test_a_transposed_k_way_gemm_is_read_as_the_same_head():
    """Gemm(transB=1) with the weights stored (k, D*H): the same spec, the same bits."""
    proto = _k_way_proto("multiclass", 10)
    want = match_fused(parse_model(proto.SerializeToString()), "x", "probabilities")[0]
    t = next(t for t in proto.graph.initializer if t.name == "dense_w")
    t.raw_data = np.ascontiguousarray(np.frombuffer(t.raw_data, "<f4").reshape(20, 10).T).tobytes()
    t.dims[:] = [10, 20]
    _set_attr(next(n for n in proto.graph.node if n.op_type == "Gemm"), "transB", 1)
    data = proto.SerializeToString()
    spec, why = match_fused(parse_model(data), "x", "probabilities")
    assert spec is not None and np.array_equal(spec.head_w, want.head_w), why
    X = np.random.default_rng(2).standard_normal((20, 6, 3)).astype(np.float32)
    got = fused.FusedKernel(LIB, spec, ISAS[0]).run(X)
    assert np.abs(got - open_session(data, name="transB").run(None, {"x": X})[0]).max() <= ATOL


def _k_way_errors(case, isa: str, softmax_kind=None) -> dict[str, tuple[float, int]]:
    """{family: (max |kernel - model.onnx|, values that differ)} for a K_WAY case."""
    task, k, units, spread = case
    data = _k_way_proto(task, k, units=units, spread=spread).SerializeToString()
    kernel = _kernel(data, isa, output="probabilities")
    if softmax_kind:
        kernel.softmax_kind = softmax_kind
    sess = open_session(data, name="k-way")
    errors = {}
    for name, X in _stress(13, 3, np.random.default_rng(k)).items():
        if isa == "generic" and len(X) > 64:
            X = X[:64]
        got, want = kernel.run(X, threads=2), sess.run(None, {"x": X})[0]
        assert got.shape == want.shape == (len(X), k)
        errors[name] = (float(np.abs(got.astype(np.float64) - want).max()), int((got != want).sum()))
    return errors


@needs_library
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", K_WAY, ids=_k_way_ids)
def test_k_way_heads_match_model_onnx(case, isa):
    """Every stress family within 1e-6 of model.onnx (the self-check's contract, on any CPU)."""
    errors = _k_way_errors(case, isa)
    worst = max(errors, key=lambda f: errors[f][0])
    assert errors[worst][0] <= ATOL, f"{isa} {worst}: max |kernel - model.onnx| {errors[worst][0]:.3g}"


@needs_library
@needs_fma_cpu
@pytest.mark.parametrize("case", K_WAY, ids=_k_way_ids)
def test_k_way_heads_reproduce_model_onnx_bit_for_bit(case):
    """Gemm to k units, Sigmoid, and MLAS' softmax (the sum-exp kernel MLAS picks on this CPU): not
    one bit differs from onnxruntime running model.onnx, for every ISA variant and stress family."""
    for isa in ISAS:
        errors = _k_way_errors(case, isa)
        assert not any(n for _, n in errors.values()), f"{isa}: {errors}"


@needs_library
def test_the_softmax_follows_the_mlas_kernel_this_cpu_runs():
    """The head reproduces the MLAS sum-exp kernel of this CPU (AVX512F where the CPU has it, else
    FMA3). The two sum k values in different orders: over 40 units the other CPU's kernel gives
    other bits (within 1e-6), so the bit-for-bit test above tells the two apart."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    spec = match_fused(parse_model(_k_way_proto("multiclass", 40, units=33).SerializeToString()), "x",
                       "probabilities")[0]
    kernel = fused.FusedKernel(LIB, spec, ISAS[0])
    if flags is not None:
        assert kernel.softmax_kind == ("avx512f" if "avx512f" in flags else "fma3")
    other = {"avx512f": "fma3", "fma3": "avx512f"}[kernel.softmax_kind]
    errors = _k_way_errors(("multiclass", 40, 33, 1.0), ISAS[0], softmax_kind=other)
    assert max(e for e, _ in errors.values()) <= ATOL, errors
    assert sum(n for _, n in errors.values()) > 0, errors


@needs_library
@pytest.mark.parametrize("task,k", [("multiclass", 3), ("multiclass", 10), ("multilabel", 4)])
def test_the_predictor_uses_the_kernel_for_k_classes(task, k, tmp_path):
    """A multiclass or multilabel folder (fixed length): the kernel passes its self-check and serves
    predict_proba, (N, k) as the graphs give it."""
    from tiny_models import write_tiny_model

    folder = write_tiny_model(tmp_path / "m", task=task, class_names=[f"c{j}" for j in range(k)])
    p = Predictor.load(folder)
    X = np.random.default_rng(k).standard_normal((70, 9, 3)).astype(np.float32) * 2
    got = p.predict_proba(X)
    info = p.debug_info()["fused"]
    assert info["used"] and info["isa"] == ISAS[0], info
    assert info["checks"][ISAS[0]]["max_abs_vs_model_onnx"] <= ATOL
    want = Predictor.load(folder, fused=False).predict_proba(X)
    assert got.shape == want.shape == (70, k) and got.dtype == np.float32
    assert np.abs(got - want).max() <= ATOL
    if "avx2" in ISAS:
        assert np.array_equal(got, want)
    assert np.array_equal(p.predict_proba(X[:1]), got[:1])


@needs_library
def test_the_generic_variant_is_never_chosen_by_itself(monkeypatch):
    """The scalar C variant is slower than the onnxruntime graph: on a CPU without AVX2+FMA the
    Predictor keeps the graphs and says why; asked for by name, the variant still runs."""
    monkeypatch.setattr(fused, "supported_isas", lambda lib: ["generic"])
    data = (EXPORTED / "model.onnx").read_bytes()
    sess = open_session(data, name="generic")
    X = np.random.default_rng(4).standard_normal((5, 50, 8)).astype(np.float32)
    onnx_proba = lambda Z: sess.run(None, {"x": Z})[0].reshape(-1)  # noqa: E731
    kernel, info = fused.prepare_fused(data, "x", "probability", onnx_proba, X)
    assert kernel is None and "isa='generic'" in info["reason"] and not info["checks"], info
    kernel, info = fused.prepare_fused(data, "x", "probability", onnx_proba, X, isa="generic")
    assert kernel is not None and info["used"] and info["isa"] == "generic", info


@needs_library
def test_scaling_inside_the_graph_is_reproduced():
    """x -> Sub -> Div (per-feature constants) before the GRU: the kernel applies the same float32 ops."""
    sub, div = np.float32([0.5, -1.0, 2.0]), np.float32([3.0, 0.25, 1.5])
    data = _with_scaling(tiny_model_proto(3, 8, seed=4), sub, div).SerializeToString()
    spec, why = match_fused(parse_model(data), "x", "probability")
    assert spec is not None and [op for op, _ in spec.prefix] == ["Sub", "Div"], why
    sess = open_session(data, name="scaled")
    X = np.random.default_rng(2).uniform(-50, 50, (29, 11, 3)).astype(np.float32)
    for isa in ISAS:
        got = fused.FusedKernel(LIB, spec, isa).run(X)
        assert np.abs(got - sess.run(None, {"x": X})[0].reshape(-1)).max() <= ATOL, isa


@needs_library
def test_the_kernels_input_scaling_is_numpys_float32_arithmetic_bit_for_bit():
    """The kernel scales the input itself (Sub, Div, Mul then Add per feature): the same bits as
    numpy's float32 operations fed to the same kernel without scaling (no fused multiply-add)."""
    import dataclasses
    sub, div = np.float32([0.5, -1.0, 2.0]), np.float32([3.0, 0.25, 1.7])
    mul, add = np.float32([1.1, 0.3, -2.9]), np.float32([0.7, -0.2, 1e-3])
    spec, why = match_fused(parse_model(_with_scaling(tiny_model_proto(3, 8, seed=4), sub, div).SerializeToString()),
                            "x", "probability")
    assert spec is not None, why
    scaled_spec = dataclasses.replace(spec, prefix=[("Sub", sub), ("Div", div), ("Mul", mul), ("Add", add)])
    plain_spec = dataclasses.replace(spec, prefix=[])
    X = np.random.default_rng(3).uniform(-50, 50, (41, 11, 3)).astype(np.float32)
    Z = np.add(np.multiply(np.divide(np.subtract(X, sub), div), mul), add)  # float32 throughout
    assert Z.dtype == np.float32
    for isa in ISAS:
        assert np.array_equal(fused.FusedKernel(LIB, scaled_spec, isa).run(X, threads=2),
                              fused.FusedKernel(LIB, plain_spec, isa).run(Z, threads=2)), isa


@needs_library
def test_the_kernel_refuses_nan_and_infinity_before_and_after_scaling():
    """A NaN or an infinity in the input, or a value the scaling overflows, gives no output."""
    from pipeline.errors import NonFiniteInput
    sub, div = np.float32([0.0, 0.0, 0.0]), np.float32([1e-30, 1.0, 1.0])
    data = _with_scaling(tiny_model_proto(3, 8, seed=4), sub, div).SerializeToString()
    spec, why = match_fused(parse_model(data), "x", "probability")
    assert spec is not None, why
    X = np.random.default_rng(4).uniform(-1, 1, (30, 11, 3)).astype(np.float32)
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, spec, isa)
        assert np.isfinite(kernel.run(X, threads=2)).all()
        for row, value, feature in ((0, np.nan, 1), (29, np.inf, 2), (17, -np.inf, 0), (5, 1e10, 0)):
            bad = X.copy()
            bad[row, 7, feature] = value  # 1e10 / 1e-30 overflows float32 once scaled
            with pytest.raises(NonFiniteInput):
                kernel.run(bad, threads=2)


@needs_library
def test_the_predictor_names_a_nan_the_kernel_meets():
    """With the kernel running, a NaN still gets the input check's one-line error naming the value."""
    p = Predictor.load(EXPORTED)
    X = np.random.default_rng(5).standard_normal((40, 50, 8)).astype(np.float32)
    X[33, 12, 4] = np.nan
    with pytest.raises(InputError, match="sample 33"):
        p.predict_proba(X)
    assert p.debug_info()["fused"]["used"]
    X[33, 12, 4] = 0.0
    assert np.isfinite(p.predict_proba(X)).all()


@needs_library
def test_results_do_not_depend_on_batch_split_or_threads():
    """A row's number never depends on the batch it came in or on the thread count (bit-identical)."""
    kernel = _kernel((EXPORTED / "model.onnx").read_bytes(), ISAS[0])
    X = np.random.default_rng(9).standard_normal((301, 50, 8)).astype(np.float32)
    whole = kernel.run(X, threads=2)
    assert np.array_equal(whole, kernel.run(X, threads=1))
    parts = np.concatenate([kernel.run(X[i:i + n], threads=2) for i, n in
                            ((0, 1), (1, 2), (3, 5), (8, 7), (15, 64), (79, 222))])
    assert np.array_equal(whole, parts)
    # one row asked to use two threads (it runs on one): same bits
    for i in range(0, 301, 30):
        assert np.array_equal(kernel.run(X[i:i + 1], threads=2), whole[i:i + 1])


@needs_library
@pytest.mark.parametrize("isa", ISAS)
def test_one_to_three_rows_on_two_threads_give_the_same_bits(isa):
    """Batches smaller than two blocks' worth (1, 2, 3 rows) asked to use two threads: the same bits as
    one thread, call after call (the pool's worker takes a block or none)."""
    kernel = _kernel((EXPORTED / "model.onnx").read_bytes(), isa)
    X = np.random.default_rng(12).standard_normal((40, 50, 8)).astype(np.float32) * 3
    cuts = ((0, 1), (1, 2), (3, 3), (6, 1), (7, 2))
    alone = [kernel.run(X[i:i + n], threads=1) for i, n in cuts]
    for _ in range(10):
        assert all(np.array_equal(a, kernel.run(X[i:i + n], threads=2)) for a, (i, n) in zip(alone, cuts))


def _numpy_spec(layers, head: str, seed: int, features: int = 3, outputs: int = 1, activation: str = "sigmoid",
                dense=()):
    """A FusedSpec with random, non-saturating weights, built without any graph: ``layers`` is
    [(H, direction, linear_before_reset, flip per direction[, Bidirectional merge])], input side first; ``dense`` [(units,
    activation)] the Dense layers between the pooling and the head; the head has ``outputs`` units and
    ``activation`` (a binary head by default)."""
    rng = np.random.default_rng(seed)
    built, F = [], features
    for H, direction, lbr, flip, *merge in layers:
        D = 2 if direction == "bidirectional" else 1
        W, R = (rng.standard_normal((D, 3 * H, k)).astype(np.float32) * np.float32(0.4) for k in (F, H))  # (D, 3H, F|H)
        B = rng.standard_normal((D, 6 * H)).astype(np.float32) * np.float32(0.1)                          # (D, 6H)
        built.append(FusedLayer(W=W, R=R, B=B, direction=direction, flip=flip, linear_before_reset=lbr,
                                merge=merge[0] if merge else "concat"))
        F = built[-1].width
    hidden = []
    for units, act in dense:
        hidden.append((rng.standard_normal((F, units)).astype(np.float32) * np.float32(0.4),
                       rng.standard_normal(units).astype(np.float32) * np.float32(0.2), act))
        F = units
    if outputs == 1 and activation == "sigmoid":
        return FusedSpec(layers=built, head=head, head_w=rng.standard_normal(F).astype(np.float32) * np.float32(0.5),
                         head_b=0.1, dense=hidden)
    return FusedSpec(layers=built, head=head, activation=activation, dense=hidden,
                     head_w=rng.standard_normal((F, outputs)).astype(np.float32) * np.float32(0.5),
                     head_b=np.float32(0.1) * np.arange(outputs, dtype=np.float32))


@needs_library
@pytest.mark.parametrize("layers,head,outputs,activation,dense", [(*case, ()) for case in [
    # three layers (both sequence buffers), bidirectional into reverse-and-flipped into forward
    ([(5, "bidirectional", 1, (False, False)), (17, "reverse", 0, (True,)), (20, "forward", 1, (False,))], "avg",
     1, "sigmoid"),
    ([(9, "reverse", 1, (True,)), (7, "bidirectional", 0, (False, False)), (33, "forward", 0, (False,))], "last",
     1, "sigmoid"),
    # a mean over a reverse direction that keeps time order: its states kept and summed in time order
    ([(6, "forward", 1, (False,)), (12, "reverse", 1, (False,))], "avg", 1, "sigmoid"),
    ([(16, "bidirectional", 0, (False, False))], "avg", 1, "sigmoid"),
    # k-way heads: softmax over 10 and 50 units (MLAS' 16-lane chunks and its 48-value loop), k sigmoids
    ([(5, "bidirectional", 1, (False, False)), (17, "reverse", 0, (True,))], "avg", 10, "softmax"),
    ([(9, "reverse", 1, (True,)), (20, "forward", 1, (False,))], "last", 50, "softmax"),
    ([(7, "bidirectional", 0, (False, False))], "last", 4, "sigmoid"),
    # max pooling over time (ReduceMax): after a reverse direction in time order, a flipped one, both
    ([(6, "forward", 1, (False,)), (12, "reverse", 1, (False,))], "max", 1, "sigmoid"),
    ([(9, "reverse", 0, (True,)), (7, "bidirectional", 1, (False, False))], "max", 10, "softmax"),
]] + [
    # Dense layers between the pooling and the classifier: wider and narrower than D*H, 1 to 3 of them
    ([(6, "forward", 1, (False,))], "avg", 1, "sigmoid", [(40, "relu")]),
    ([(7, "bidirectional", 0, (False, False))], "max", 10, "softmax", [(5, "sigmoid"), (33, "linear"), (9, "relu")]),
    ([(9, "reverse", 1, (False,))], "last", 4, "sigmoid", [(16, "linear")]),
    # Bidirectional merges sum, mul, ave: last state, mean, max; merged into a next layer
    ([(8, "bidirectional", 1, (False, False), "sum")], "last", 1, "sigmoid", ()),
    ([(8, "bidirectional", 0, (False, False), "mul")], "avg", 3, "softmax", ()),
    ([(11, "bidirectional", 1, (False, False), "ave")], "max", 1, "sigmoid", [(6, "relu")]),
    ([(5, "bidirectional", 1, (False, False), "ave"), (7, "bidirectional", 0, (False, False), "sum"),
      (9, "forward", 1, (False,))], "avg", 1, "sigmoid", ()),
    ([(6, "bidirectional", 0, (False, False), "mul"), (10, "bidirectional", 1, (False, False), "ave")], "avg", 4,
     "sigmoid", ()),
])
def test_every_layer_kind_without_a_graph(layers, head, outputs, activation, dense):
    """Stacked, bidirectional, reversed and linear_before_reset=0 layers, binary and k-way heads, specs
    built in numpy (no Keras: these also run under the sanitizer builds of make kernel-check): within
    1e-5 of float64, every ISA the same bits, and a row's bits independent of its batch and the
    thread count."""
    spec = _numpy_spec(layers, head, seed=len(layers) * 7 + layers[0][0], outputs=outputs, activation=activation,
                       dense=dense)
    rng = np.random.default_rng(21)
    for T in (1, 9):
        X = rng.standard_normal((50, T, spec.features)).astype(np.float32)
        runs = {isa: fused.FusedKernel(LIB, spec, isa).run(X, threads=2) for isa in ISAS}
        err = float(np.abs(runs[ISAS[0]].astype(np.float64) - _float64_proba(spec, X)).max())
        assert err <= 1e-5, f"T={T}: max |kernel - float64| {err:.3g}"
        for isa, got in runs.items():
            assert np.array_equal(got, runs[ISAS[0]]), f"T={T}: {isa} differs from {ISAS[0]}"
        kernel = fused.FusedKernel(LIB, spec, ISAS[-1])
        parts = [kernel.run(X[i:i + n], threads=t) for i, n, t in ((0, 1, 2), (1, 2, 2), (3, 7, 1), (10, 40, 2))]
        assert np.array_equal(np.concatenate(parts), runs[ISAS[0]]), f"T={T}"


def _max_pooled_model() -> bytes:
    """exported/model.onnx with its mean over time (ReduceMean axes [0], keepdims 0) made a max over time
    (ReduceMax, same attributes: what the exporter emits for Keras' GlobalMaxPooling1D)."""
    proto = type(tiny_model_proto())()
    proto.ParseFromString((EXPORTED / "model.onnx").read_bytes())
    (node,) = [n for n in proto.graph.node if n.op_type == "ReduceMean"]
    node.op_type = "ReduceMax"
    return proto.SerializeToString()


@needs_library
@pytest.mark.parametrize("isa", ISAS)
def test_max_pooling_reproduces_model_onnx_bit_for_bit(isa):
    """GRU -> max over time -> Dense(1, sigmoid): model.onnx's bits for every ISA variant (ReduceMax is
    exact in any order), on the stress families and the reference rows; a model that pools the max of
    anything else keeps the onnxruntime path with the reason."""
    data = _max_pooled_model()
    spec, why = match_fused(parse_model(data), "x", "probability")
    assert spec is not None and spec.head == "max", why
    kernel, sess = fused.FusedKernel(LIB, spec, isa), open_session(data, name="max")
    assert kernel.stream_width == -1  # no streams for a max over the whole sequence
    rng = np.random.default_rng(5)
    families = dict(_stress(50, 8, rng), reference=np.load(EXPORTED / "reference.npz")["X"].astype(np.float32))
    for name, X in families.items():
        if isa == "generic" and len(X) > 64:
            X = X[:64]
        got, want = kernel.run(X, threads=2), sess.run(None, {"x": X})[0].reshape(-1)
        if "avx2" in ISAS:
            assert np.array_equal(got, want), f"{isa} {name}: {int((got != want).sum())} of {len(X)} rows differ"
        assert np.abs(got - want).max() <= ATOL, f"{isa} {name}"
    X = families["reference"][:40]
    k, info = fused.prepare_fused(data, "x", "probability", lambda Z: sess.run(None, {"x": Z})[0].reshape(-1), X,
                                  isa=isa)
    assert k is not None and info["used"] and info["checks"][isa]["max_abs_vs_model_onnx"] <= ATOL, info
    proto = type(tiny_model_proto())()
    proto.ParseFromString(data)
    (node,) = [n for n in proto.graph.node if n.op_type == "ReduceMax"]
    node.input[0] = "x"  # a max over the model input: not a GRU's sequence
    spec, why = match_fused(parse_model(proto.SerializeToString()), "x", "probability")
    assert spec is None and "max over time" in why, why


@needs_library
@pytest.mark.parametrize("layers,head,outputs,activation,dense", [
    ([(13, "forward", 1, (False,))], "avg", 1, "sigmoid", ()),
    ([(6, "forward", 0, (False,)), (17, "forward", 1, (False,))], "last", 4, "softmax", [(8, "relu")]),
    ([(9, "forward", 1, (False,)), (5, "forward", 1, (False,)), (20, "forward", 0, (False,))], "avg", 3, "sigmoid", ()),
])
def test_variable_length_rows_get_the_bits_they_get_alone(layers, head, outputs, activation, dense):
    """run_lengths: each row of a right-padded batch (lengths 1 .. T, NaN past them, never read) gets the bits
    of its unpadded row run alone, for every ISA and thread count; bad lengths and a forward output handed on
    reversed refused."""
    spec = _numpy_spec(layers, head, seed=11, outputs=outputs, activation=activation, dense=dense)
    rng = np.random.default_rng(12)
    T = 23
    X = rng.standard_normal((61, T, spec.features)).astype(np.float32)
    lens = rng.integers(1, T + 1, 61)
    lens[:3] = T, 1, T
    for i, n in enumerate(lens):
        X[i, n:] = np.nan
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, spec, isa)
        alone = np.concatenate([kernel.run(X[i:i + 1, :n], threads=1) for i, n in enumerate(lens)])
        for threads in (1, 2):
            assert np.array_equal(kernel.run_lengths(X, lens, threads=threads), alone), (isa, threads)
        for bad in (np.zeros(61), np.full(61, T + 1)):
            with pytest.raises(ValueError, match="lengths"):
                kernel.run_lengths(X, bad)
    X[5, 0, 1] = np.inf  # on a real step: found
    with pytest.raises(NonFiniteInput):
        fused.FusedKernel(LIB, spec, ISAS[-1]).run_lengths(X, lens)
    flipped = _numpy_spec([(5, "forward", 1, (True,)), (4, "forward", 1, (False,))], "avg", seed=1)
    with pytest.raises(ValueError, match="forward"):  # (reverse layers: tests/runtime/test_fused_lengths_heads.py)
        fused.FusedKernel(LIB, flipped, ISAS[-1]).run_lengths(X[:, :, :3], lens)


@needs_library
def test_token_ids_select_the_embedding_rows_inside_the_kernel():
    """A token spec (Embedding table (V, F) before the first layer): ids (N, T) give the bits of the same
    spec run on the embedded float rows, for every ISA; an id outside [0, V) is refused; no streams."""
    from dataclasses import replace

    spec = _numpy_spec([(9, "bidirectional", 1, (False, False), "sum"), (7, "forward", 0, (False,))], "avg", 7,
                       outputs=3, activation="softmax")
    table = np.random.default_rng(3).standard_normal((25, spec.features)).astype(np.float32)  # (V, F)
    ids = np.random.default_rng(4).integers(0, 25, (41, 6))
    for isa in ISAS:
        tokens = fused.FusedKernel(LIB, replace(spec, embedding=table), isa)
        assert np.array_equal(tokens.run(ids, threads=2), fused.FusedKernel(LIB, spec, isa).run(table[ids], threads=2))
        assert tokens.stream_width == -1
        with pytest.raises(ValueError, match="outside the Embedding table"):
            tokens.run(np.array([[0, 25]]))
        with pytest.raises(ValueError, match="outside the Embedding table"):
            tokens.run(np.array([[-1, 3]]))


# ---------------------------------------------------------------------------- the Predictor
@needs_library
def test_predictor_uses_the_best_isa_after_its_self_check():
    p = Predictor.load(EXPORTED)
    ref = np.load(EXPORTED / "reference.npz")
    got = p.predict_proba(ref["X"])
    info = p.debug_info()["fused"]
    assert info["used"] and info["isa"] == ISAS[0], info
    check = info["checks"][ISAS[0]]
    assert check["passed"] and check["max_abs_vs_model_onnx"] <= ATOL and check["max_abs_vs_keras"] <= 1e-5
    native = Predictor.load(EXPORTED, graph="native")
    assert native.debug_info()["fused"]["used"] is False
    assert np.abs(got - native.predict_proba(ref["X"])).max() <= ATOL
    assert np.abs(got - ref["keras_proba"]).max() <= 1e-5


@needs_library
def test_eight_threads_on_one_predictor_give_identical_outputs():
    p = Predictor.load(EXPORTED)
    rng = np.random.default_rng(11)
    batches = [rng.standard_normal((n, 50, 8)).astype(np.float32) for n in (1, 7, 64, 300)]
    want = [p.predict_proba(X) for X in batches]
    assert p.debug_info()["fused"]["used"]
    errors: list[str] = []

    def work(k: int) -> None:
        for rep in range(4):
            for i in ((k + rep) % 4, (k + rep + 1) % 4):
                if not np.array_equal(p.predict_proba(batches[i]), want[i]):
                    errors.append(f"thread {k} batch {i}")

    run_in_threads(work, 8)
    assert not errors, errors


def test_no_library_falls_back_to_the_onnxruntime_graphs(monkeypatch, capsys):
    monkeypatch.setattr(fused, "library_path", lambda: None)
    X = np.random.default_rng(4).standard_normal((70, 50, 8)).astype(np.float32)
    p = Predictor.load(EXPORTED)
    got = p.predict_proba(X)
    info = p.debug_info()["fused"]
    assert not info["used"] and "not built" in info["reason"], info
    assert np.array_equal(got, Predictor.load(EXPORTED, fused=False).predict_proba(X))
    assert capsys.readouterr().out == ""


def test_a_library_that_cannot_load_falls_back(monkeypatch, tmp_path):
    bad = tmp_path / "_gru_kernel.so"
    bad.write_bytes(b"\x7fELF not really a shared object")
    monkeypatch.setattr(fused, "library_path", lambda: bad)
    p = Predictor.load(EXPORTED)
    X = np.random.default_rng(5).standard_normal((3, 50, 8)).astype(np.float32)
    assert np.array_equal(p.predict_proba(X), Predictor.load(EXPORTED, fused=False).predict_proba(X))
    info = p.debug_info()["fused"]
    assert not info["used"] and "cannot be loaded" in info["reason"], info


@needs_library
def test_a_library_failing_its_self_check_is_not_used(monkeypatch, capsys):
    """Every variant returns numbers 2e-6 off: none passes, the reason names each ISA and its error."""
    real_run = fused.FusedKernel.run
    monkeypatch.setattr(fused.FusedKernel, "run", lambda self, X, threads=1: real_run(self, X, threads) + 2e-6)
    X = np.random.default_rng(6).standard_normal((70, 50, 8)).astype(np.float32)
    p = Predictor.load(EXPORTED)
    got = p.predict_proba(X)
    info = p.debug_info()["fused"]
    assert not info["used"] and "no ISA variant passed the self-check" in info["reason"], info
    assert set(info["checks"]) == set(ISAS) & set(fused.AUTO_ISAS) and not any(c["passed"] for c in info["checks"].values())
    assert all(c["max_abs_vs_model_onnx"] > ATOL for c in info["checks"].values())
    assert np.array_equal(got, Predictor.load(EXPORTED, fused=False).predict_proba(X))
    assert capsys.readouterr().out == ""


@needs_library
def test_a_variant_failing_its_self_check_falls_to_the_next(monkeypatch):
    if len(ISAS) < 2:
        pytest.skip("one ISA variant on this CPU")
    real_run = fused.FusedKernel.run
    monkeypatch.setattr(fused.FusedKernel, "run",
                        lambda self, X, threads=1: real_run(self, X, threads) + (1e-3 if self.isa == ISAS[0] else 0))
    info = Predictor.load(EXPORTED).debug_info()["fused"]
    assert info["used"] and info["isa"] == ISAS[1], info
    assert not info["checks"][ISAS[0]]["passed"] and info["checks"][ISAS[1]]["passed"]


@needs_library
@pytest.mark.parametrize("option,reason", [
    (("activations", ["Tanh", "Tanh"]), "activations ['tanh', 'tanh']"),  # recurrent_activation="tanh"
    (("activations", ["Sigmoid", "Relu"]), "activations ['sigmoid', 'relu']"),
    (("clip", None), "clip"),
])
def test_unsupported_layer_options_keep_the_onnxruntime_path(tmp_path, option, reason):
    proto = tiny_model_proto(3, 4, seed=1)
    gru = next(n for n in proto.graph.node if n.op_type == "GRU")
    name, value = option
    if name == "clip":
        a = gru.attribute.add()
        a.name, a.type, a.f = "clip", 1, 5.0  # AttributeProto.FLOAT
    else:
        _set_attr(gru, name, value)
    folder = _write(tmp_path / "m", proto)
    X = np.random.default_rng(7).standard_normal((9, 6, 3)).astype(np.float32)
    p = Predictor.load(folder)
    got = p.predict_proba(X)
    info = p.debug_info()["fused"]
    assert not info["used"] and reason in info["reason"], info
    assert np.array_equal(got, Predictor.load(folder, fused=False).predict_proba(X))


def test_uncovered_masked_models_and_explicit_graph_forms_never_use_the_kernel(tiny_masked_model_dir):
    # the tiny variable-length model reads its GRU's last state (GatherND at each length): not covered yet
    assert "variable length" in Predictor.load(tiny_masked_model_dir).debug_info()["fused"]["reason"]
    for graph in ("native", "unrolled"):
        assert Predictor.load(EXPORTED, graph=graph).debug_info()["fused"]["reason"] == f"not used with graph={graph!r}"


@needs_library
def test_a_model_without_reference_rows_is_checked_on_stress_rows(tiny_model_dir):
    p = Predictor.load(tiny_model_dir)
    info = p.debug_info()["fused"]
    assert info["used"] and info["checks"][info["isa"]]["rows"] > 0, info


@needs_library
def test_a_forked_child_runs_the_kernel():
    """The pool's workers do not survive fork(): the child starts a pool of its own (pthread_atfork)."""
    import os

    p = Predictor.load(EXPORTED)
    X = np.random.default_rng(12).standard_normal((64, 50, 8)).astype(np.float32)
    want = p.predict_proba(X)  # the parent's pool is running
    assert p.debug_info()["fused"]["used"]
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the kernel gives the same numbers
        ok = np.array_equal(p.predict_proba(X), want)
        os._exit(0 if ok else 1)
    import time

    deadline = time.monotonic() + 30  # a child waiting on its parent's workers would hang: bounded
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in the fused kernel")
    assert os.WIFEXITED(done[1]) and os.WEXITSTATUS(done[1]) == 0
