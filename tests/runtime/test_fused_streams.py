"""Streams on the fused GRU kernel (``FusedKernel.stream``, ``Stream`` with the kernel backend):
stream.onnx's numbers for every ISA variant (bit for bit where onnxruntime runs its FMA kernels,
within 1e-6 of stream.onnx and of whole-sequence ``predict_proba`` everywhere), states that move
between the kernel and stream.onnx through get_state/set_state, streams that never touch each
other, input errors that leave the state as it was, the fallback to stream.onnx with its reason,
and many streams pushed from several Python threads at once (also run under the sanitizer builds
of ``make kernel-check``, tests/runtime/test_kernel_sanitizers.py).

Correctness only: the speed is measured by tools/bench_stream.py and ``make bench``.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.runtime import Predictor, fused
from pipeline.runtime.sessions import open_session
from pipeline.runtime.stream import Stream, fused_stream_info

from fused_support import ATOL, EXPORTED, ISAS, LIB, needs_fma_cpu, needs_library, run_in_threads  # noqa: F401

pytestmark = needs_library
STATES = ("h_in_0", "avg_mean_in", "avg_count_in")  # exported/: GRU(64) -> average -> Dense(1, sigmoid)


def _predictor(monkeypatch, isa: str) -> Predictor:
    """exported/ with its kernel forced to ``isa`` (the automatic choice runs only the listed variants)."""
    monkeypatch.setattr(fused, "AUTO_ISAS", (isa,))
    p = Predictor.load(EXPORTED)
    assert p.debug_info()["fused"]["isa"] == isa
    return p


def _onnx_stream(sess, X: np.ndarray, chunks) -> tuple[list, dict]:
    """stream.onnx on (B, T, F) in the given chunk lengths: the (B,) probabilities after each chunk and the
    last states {name: (1, B, H)}."""
    B = len(X)
    state = {"h_in_0": np.zeros((1, B, 64), np.float32), "avg_mean_in": np.zeros((1, B, 64), np.float32),
             "avg_count_in": np.zeros((1, B, 1), np.float32)}
    probs, t0 = [], 0
    for T in chunks:
        p, h, m, c = sess.run(["probability", "h_out_0", "avg_mean_out", "avg_count_out"],
                              {"x": np.ascontiguousarray(X[:, t0:t0 + T]), **state})
        state = {"h_in_0": h, "avg_mean_in": m, "avg_count_in": c}
        probs.append(p.reshape(B))
        t0 += T
    return probs, state


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_streams_are_stream_onnx_bit_for_bit(isa):
    """FusedKernel.stream against stream.onnx, one step at a time and in uneven chunks: the probabilities
    after every chunk and every state, bit for bit (within 1e-6 on a CPU without FMA); one chunk of the
    whole sequence is model.onnx's (the kernel's gru_run) bit for bit."""
    kernel = fused.FusedKernel(LIB, fused.onnx_reader.match_fused(
        fused.onnx_reader.parse_model((EXPORTED / "model.onnx").read_bytes()), "x", "probability")[0], isa)
    sess = open_session(EXPORTED / "stream.onnx")
    X = np.load(EXPORTED / "reference.npz")["X"][:13].astype(np.float32)  # (13, 50, 8) raw
    X[-1] *= np.float32(40)  # saturating gates
    B, W = len(X), kernel.stream_width
    assert W == 64 + 64 + 1
    for chunks in ([1] * 50, [3, 1, 17, 29], [50]):
        want, want_state = _onnx_stream(sess, X, chunks)
        rows, out, t0 = [np.zeros((B, W), np.float32) for _ in range(2)], np.zeros((B, 1), np.float32), 0
        for T, w in zip(chunks, want):
            kernel.stream(np.ascontiguousarray(X[:, t0:t0 + T]), rows[0], rows[1], out, threads=2)
            rows.reverse()
            t0 += T
            if "avx2" in ISAS:
                assert np.array_equal(out[:, 0], w), f"{isa} chunks {chunks[:4]}: after step {t0}"
            assert np.abs(out[:, 0] - w).max() <= ATOL
        got_state = {"h_in_0": rows[0][:, :64], "avg_mean_in": rows[0][:, 64:128], "avg_count_in": rows[0][:, 128:]}
        for name in STATES:
            assert np.abs(got_state[name] - want_state[name][0]).max() <= (0 if "avx2" in ISAS else ATOL), name
        if chunks == [50]:
            assert np.array_equal(out[:, 0], kernel.run(X, threads=2)), isa


@pytest.mark.parametrize("isa", ISAS)
def test_stream_push_equals_stream_onnx_and_predict_proba(monkeypatch, isa):
    """Stream.push on the kernel (one stream one step at a time, 13 streams in chunks) against the same
    Stream on stream.onnx (fused=False) and against whole-sequence predict_proba."""
    p = _predictor(monkeypatch, isa)
    X = np.load(EXPORTED / "reference.npz")["X"][:13]  # float64 raw: push casts
    whole = p.predict_proba(X)
    with p.stream() as s, Stream.open(p, fused=False) as o:
        assert s.backend == f"fused kernel ({isa})" and f"backend=fused kernel ({isa})" in repr(s)
        assert o.backend.startswith("stream.onnx")
        for t in range(50):
            a, b = s.push(X[0, t:t + 1]), o.push(X[0, t:t + 1])
            assert isinstance(a, float) and abs(a - b) <= ATOL and (a == b or "avx2" not in ISAS)
        assert a == whole[0] if "avx2" in ISAS else abs(a - whole[0]) <= ATOL
        for name, v in s.get_state().items():
            assert v.shape == o.get_state()[name].shape and np.abs(v - o.get_state()[name]).max() <= ATOL
    with p.stream(13) as s, Stream.open(p, 13, fused=False) as o:
        for a, b in ((0, 7), (7, 8), (8, 31), (31, 50)):
            got, want = s.push(X[:, a:b]), o.push(X[:, a:b])
            assert got.shape == (13,) and np.abs(got - want).max() <= ATOL
        assert np.abs(got - whole).max() <= ATOL
    info = p.debug_info()["stream"]
    assert info == fused_stream_info(p) and info["used"] and info["isa"] == isa, info
    assert info["max_abs_vs_stream_onnx"] <= ATOL


def test_states_move_between_the_kernel_and_stream_onnx():
    """get_state of a kernel-backed stream sets an onnxruntime-backed one and back (same keys and shapes),
    for one stream and for many; both continue with the same numbers."""
    p = Predictor.load(EXPORTED)
    X = np.load(EXPORTED / "reference.npz")["X"][:5]
    for n in (None, 5):
        x = X[0] if n is None else X
        with p.stream(n) as k, Stream.open(p, n, fused=False) as o:
            assert k.backend.startswith("fused") and o.backend.startswith("stream.onnx")
            k.push(x[..., :20, :])
            saved = k.get_state()
            assert sorted(saved) == sorted(STATES)
            shapes = {name: ((1, 64), (1, 64), (1, 1))[i] for i, name in enumerate(STATES)}
            for name, v in saved.items():
                assert v.shape == (shapes[name] if n is None else (n, *shapes[name])) and v.dtype == np.float32
            o.set_state(saved)
            a, b = k.push(x[..., 20:, :]), o.push(x[..., 20:, :])
            assert np.abs(np.asarray(a) - np.asarray(b)).max() <= ATOL
            first = np.asarray(a)
            o.reset()
            o.push(x[..., :33, :])
            k.set_state(o.get_state())  # and back: onnxruntime's state into the kernel
            a, b = k.push(x[..., 33:, :]), o.push(x[..., 33:, :])
            assert np.abs(np.asarray(a) - np.asarray(b)).max() <= ATOL
            k.set_state(saved)  # rewind, as docs/streaming.md shows
            assert np.array_equal(np.asarray(k.push(x[..., 20:, :])), first)


def test_many_chunk_lengths_on_one_kernel_stream():
    """More distinct chunk lengths than the Stream keeps input buffers for (their cache evicts): the numbers
    stay the one-chunk ones within 1e-6, and the last step's equal whole-sequence predict_proba."""
    p = Predictor.load(EXPORTED)
    X = np.load(EXPORTED / "reference.npz")["X"][:3]
    with p.stream(3) as s:
        assert s.backend.startswith("fused")
        t = 0
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 4):  # 50 steps, 9 distinct lengths
            got = s.push(X[:, t:t + n])
            t += n
        assert t == 50 and np.abs(got - p.predict_proba(X)).max() <= ATOL


def test_one_streams_state_never_touches_another():
    """n streams in one Stream are n independent sequences: each stream's numbers are the bits it gets
    alone, whatever the other streams push (here: garbage-sized values in the others)."""
    p = Predictor.load(EXPORTED)
    X = np.load(EXPORTED / "reference.npz")["X"][:30]
    alone = []
    for i in range(3):
        with p.stream() as s:
            alone.append([s.push(X[i, t:t + 5]) for t in range(0, 50, 5)])
    noisy = X.copy()
    noisy[3:] = np.random.default_rng(0).standard_normal(noisy[3:].shape) * 30
    with p.stream(30) as s:
        for j, t in enumerate(range(0, 50, 5)):
            got = s.push(noisy[:, t:t + 5])
            assert [got[i] for i in range(3)] == [alone[i][j] for i in range(3)], t
        before = s.get_state()
        s.set_state({k: np.where(np.arange(30)[:, None, None] == 7, v * 0 + 3, v) for k, v in before.items()})
        after = s.get_state()
        for k in before:  # setting stream 7 leaves every other row as it was
            assert np.array_equal(np.delete(after[k], 7, 0), np.delete(before[k], 7, 0))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 into float32, as without the kernel
def test_a_bad_push_leaves_the_kernels_state_unchanged():
    p = Predictor.load(EXPORTED)
    X = np.load(EXPORTED / "reference.npz")["X"][:4]
    with p.stream(4) as s:
        assert s.backend.startswith("fused")
        s.push(X[:, :10])
        saved = s.get_state()
        bad = X[:, 10:12].astype(np.float64)
        bad[2, 1, 3] = np.nan
        with pytest.raises(InputError, match="stream 2, timestep 1, feature 3"):
            s.push(bad)
        bad[2, 1, 3] = 1e39  # finite raw, infinite in float32
        with pytest.raises(InputError):
            s.push(bad)
        assert all(np.array_equal(v, saved[k]) for k, v in s.get_state().items()) and s.steps == 10
        assert np.abs(s.push(X[:, 10:]) - p.predict_proba(X)).max() <= ATOL


def test_streams_fall_back_to_stream_onnx_with_the_reason(monkeypatch):
    """No kernel on the Predictor, a stream self-check that fails: stream.onnx runs, and says why."""
    X = np.load(EXPORTED / "reference.npz")["X"][:2]
    off = Predictor.load(EXPORTED, fused=False)
    assert off.debug_info()["stream"] is None  # no stream opened yet
    with off.stream() as s:
        assert s.backend.startswith("stream.onnx (the Predictor does not run the fused kernel: disabled")
        assert "stream.onnx" in repr(s)
        s.push(X[0])
    assert fused_stream_info(off)["used"] is False
    p = Predictor.load(EXPORTED)
    assert p._fused() is not None  # the batch self-check passes; then no stream check can
    monkeypatch.setattr(fused, "SELF_CHECK_ATOL", -1.0)
    with p.stream(2) as s:
        assert "from stream.onnx" in s.backend, s.backend
        assert p.debug_info()["stream"]["reason"] in s.backend
        got = s.push(X)
    assert np.abs(got - p.predict_proba(X)).max() <= ATOL


def test_many_streams_from_several_python_threads_at_once():
    """Six threads, each with its own Stream of 37 streams on one Predictor, pushing uneven chunks at the
    same time (the kernel's pool is taken by one call at a time, the others run on their own thread):
    every thread gets the bits of the same pushes done alone."""
    p = Predictor.load(EXPORTED)
    X = np.load(EXPORTED / "reference.npz")["X"][:37].astype(np.float32)
    cuts = [(0, 1), (1, 2), (2, 9), (9, 10), (10, 31), (31, 50)]

    def pushes(seed: int) -> list:
        Z = np.roll(X, seed, axis=0)
        with p.stream(37) as s:
            assert s.backend.startswith("fused")
            return [s.push(Z[:, a:b]) for a, b in cuts]

    alone = [pushes(k) for k in range(6)]
    got: dict = {}
    for _ in range(3):
        run_in_threads(lambda k: got.__setitem__(k, pushes(k)), 6)
        for k in range(6):
            assert all(np.array_equal(a, b) for a, b in zip(got[k], alone[k])), k


def test_stream_width_refuses_reverse_and_bidirectional_layers():
    from pipeline.runtime.fused.onnx_reader import FusedLayer, FusedSpec

    rng = np.random.default_rng(0)
    for direction, D in (("reverse", 1), ("bidirectional", 2)):
        layer = FusedLayer(W=rng.standard_normal((D, 12, 3)).astype(np.float32),
                           R=rng.standard_normal((D, 12, 4)).astype(np.float32),
                           B=np.zeros((D, 24), np.float32), direction=direction, flip=(False,) * D,
                           linear_before_reset=1)
        spec = FusedSpec(layers=[layer], head="last", head_w=np.ones(4 * D, np.float32), head_b=0.0)
        kernel = fused.FusedKernel(LIB, spec, ISAS[-1])
        assert kernel.stream_width == -1
        with pytest.raises(ValueError, match="cannot be streamed"):
            z = np.zeros((1, 4), np.float32)
            kernel.stream(np.zeros((1, 1, 3), np.float32), z, z.copy(), np.zeros((1, 1), np.float32))


@pytest.mark.parametrize("layers,head,outputs,activation", [
    ([(5, 1), (17, 0), (20, 1)], "avg", 1, "sigmoid"),     # three layers, linear_before_reset 1/0/1
    ([(9, 0), (33, 1)], "last", 1, "sigmoid"),
    ([(16, 1)], "avg", 10, "softmax"),
    ([(7, 0), (6, 1)], "last", 4, "sigmoid"),
])
def test_stacked_and_k_way_streams_without_a_graph(layers, head, outputs, activation):
    """Numpy-built stacked forward specs (no graph: these run under the sanitizers too): one chunk of the
    whole sequence from zero is gru_run's bits, every ISA gives the same bits, chunked streams are within
    1e-6 of the whole sequence, and a row's bits do not depend on the thread count."""
    from pipeline.runtime.fused.onnx_reader import FusedLayer, FusedSpec

    rng = np.random.default_rng(sum(h for h, _ in layers))
    built, F = [], 3
    for H, lbr in layers:
        built.append(FusedLayer(W=rng.standard_normal((1, 3 * H, F)).astype(np.float32) * np.float32(0.4),
                                R=rng.standard_normal((1, 3 * H, H)).astype(np.float32) * np.float32(0.4),
                                B=rng.standard_normal((1, 6 * H)).astype(np.float32) * np.float32(0.1),
                                direction="forward", flip=(False,), linear_before_reset=lbr))
        F = H
    spec = FusedSpec(layers=built, head=head, activation=activation,
                     head_w=rng.standard_normal((F, outputs)).astype(np.float32) * np.float32(0.5),
                     head_b=np.float32(0.1) * np.arange(outputs, dtype=np.float32))
    X = rng.standard_normal((29, 12, 3)).astype(np.float32)
    results = {}
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, spec, isa)
        W = kernel.stream_width
        assert W == sum(h for h, _ in layers) + (layers[-1][0] + 1 if head == "avg" else 0)
        for chunks in ([12], [1] * 12, [5, 2, 5]):
            rows, out, t0 = [np.zeros((29, W), np.float32) for _ in range(2)], np.zeros((29, outputs), np.float32), 0
            for T in chunks:
                kernel.stream(np.ascontiguousarray(X[:, t0:t0 + T]), rows[0], rows[1], out, threads=2 if T > 1 else 1)
                rows.reverse()
                t0 += T
            whole = kernel.run(X, threads=2).reshape(29, outputs)
            if chunks == [12]:
                assert np.array_equal(out, whole), isa
            assert np.abs(out - whole).max() <= ATOL, (isa, chunks)
            results.setdefault(tuple(chunks), []).append((out.copy(), rows[0].copy()))
    for chunks, runs in results.items():
        assert all(np.array_equal(o, runs[0][0]) and np.array_equal(r, runs[0][1]) for o, r in runs), chunks
