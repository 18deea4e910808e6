"""The fused kernel's token fold and its Dense tanh (issue 26): a token model's Embedding folded into the
first layer (each token's x.W made once, gru_embedding_fold) gives model.onnx's bits, as the gather
path does, in every ISA variant; above the table cap the kernel gathers; a Dense layer with tanh
between the pooling and the classifier is read and reproduces onnxruntime's Tanh op (MLAS'
TanhKernelFma3) bit for bit, alone on every float family that matters and inside a model.
Variable-length token ids (gru_run_ids_lens): folded or gathered, every direction, merge and head give the
bits of the float variable-length path (gru_run_lens) on the ids' Embedding rows, whatever lies past each
length; an id 0 before a row's length is refused (PaddingIdInLength). The exported graphs, bit for bit
against onnxruntime: tests/export/test_fused_lengths_coverage.py.

The graphs are tests/fused_graphs.py's (onnx.helper from numpy weights: no Keras); the variable-length specs
are built in numpy.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from dataclasses import replace

from pipeline.runtime import fused
from pipeline.runtime.fused.onnx_reader import FusedLayer, FusedSpec, match_fused, parse_model

from fused_graphs import gru_graph, tanh_proto
from fused_support import ISAS, LIB, needs_fma_cpu, needs_library, token_batches  # noqa: F401



def _session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # not the unused-initializer warnings of the graphs built here
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _spec(proto, output: str):
    spec, why = match_fused(parse_model(proto.SerializeToString()), "x", output)
    assert spec is not None, why
    return spec


def _ids(rng, n: int, T: int, vocab: int) -> np.ndarray:
    """(n, T) ids with the padding id 0 and the last id vocab - 1 in every row, and whole rows of each."""
    ids = rng.integers(0, vocab, (n, T))
    ids[:, 0], ids[:, -1] = 0, vocab - 1
    ids[0], ids[-1] = 0, vocab - 1
    return ids


# ---------------------------------------------------------------------------- tokens: fold vs gather
TOKEN_CASES = [  # (F, layers, head, outputs, activation, vocab)
    (16, [(20, "forward", 1)], "avg", 1, "sigmoid", 300),
    (7, [(9, "bidirectional", 0), (33, "forward", 1)], "last", 5, "softmax", 50),
    (33, [(40, "reverse", 1)], "avg", 3, "sigmoid", 1000),
    (5, [(17, "bidirectional", 1)], "avg", 1, "sigmoid", 20),
]


@needs_library
@needs_fma_cpu
@pytest.mark.parametrize("case", TOKEN_CASES, ids=lambda c: f"F{c[0]}-{'+'.join(f'{h}{d[0]}{b}' for h, d, b in c[1])}"
                         f"-{c[2]}-k{c[3]}")
def test_folded_tokens_reproduce_model_onnx_bit_for_bit(case):
    """The fold (default, within the cap) and the gather path give model.onnx's bits in every ISA, for batches
    of 1, 2 (the AVX-512 small-batch tiles), 7 and 61 rows (not multiples of the blocks) on one and two
    threads, with the padding id 0 and the last id in the data."""
    F, layers, head, outputs, activation, vocab = case
    rng = np.random.default_rng(F)
    proto, name = gru_graph(rng, F, layers, head, outputs=outputs, activation=activation, vocab=vocab)
    spec, sess = _spec(proto, name), _session(proto)
    T = 11
    ids = _ids(rng, 61, T, vocab)
    want = sess.run(None, {"x": ids})[0].reshape(len(ids), -1)
    compared = 0
    for isa in ISAS:
        kernel = fused.FusedKernel(LIB, spec, isa)
        assert kernel.token_path == "fold"
        for path in ("fold", "gather", "fold"):
            kernel.token_path = path
            assert kernel.token_path == path
            for n, threads in ((1, 1), (2, 1), (7, 2), (61, 2), (61, 1)):
                got = kernel.run(ids[:n], threads=threads).reshape(n, -1)
                assert np.array_equal(got, want[:n]), (
                    f"{isa} {path} n={n}: {int((got != want[:n]).sum())} of {got.size} values differ")
                compared += got.size
    assert compared > 0


@needs_library
def test_above_the_cap_the_kernel_gathers():
    """vocab x D x 3 x Hp x 4 bytes above FOLD_MAX_BYTES: no table, the gather path, the same numbers as
    the float input of the Embedding rows, with lengths too; asking for the fold keeps the gather."""
    rng = np.random.default_rng(5)
    proto, name = gru_graph(rng, 2, [(16, "bidirectional", 1)], "avg")
    spec = _spec(proto, name)
    vocab = LIB.gru_fold_max_bytes() // (2 * 3 * 16 * 4) + 1  # just above the cap for D = 2, Hp = 16
    table = rng.standard_normal((vocab, 2)).astype(np.float32)
    ids = _ids(rng, 9, 6, vocab)
    kernel = fused.FusedKernel(LIB, replace(spec, embedding=table), ISAS[0])
    assert kernel.token_path == "gather"
    kernel.token_path = "fold"
    assert kernel.token_path == "gather"
    assert np.array_equal(kernel.run(ids, threads=2), fused.FusedKernel(LIB, spec, ISAS[0]).run(table[ids]))
    small = fused.FusedKernel(LIB, replace(spec, embedding=table[:vocab - 2]), ISAS[0])  # at the cap: folded
    assert small.token_path == "fold"
    real = np.where(ids == 0, 1, ids)  # (9, 6) with lengths: no padding id before a length
    lens = np.arange(9) % 6 + 1
    X = table[real]
    X[np.arange(6)[None, :] >= lens[:, None]] = np.nan
    tokens = fused.FusedKernel(LIB, replace(spec, embedding=table, lengths=True), ISAS[0])
    assert tokens.token_path == "gather"
    assert np.array_equal(tokens.run_lengths(real, lens, threads=2),
                          fused.FusedKernel(LIB, replace(spec, lengths=True), ISAS[0]).run_lengths(X, lens))


@needs_library
def test_prepare_fused_says_which_token_path_runs():
    """prepare_fused's info (Predictor.debug_info()["fused"]) names the token path."""
    rng = np.random.default_rng(8)
    proto, name = gru_graph(rng, 6, [(10, "forward", 1)], "avg", vocab=40)
    sess = _session(proto)
    check = fused.self_check_ids(None, 40, 8)
    kernel, info = fused.prepare_fused(proto.SerializeToString(), "x", name,
                                       lambda X: sess.run(None, {"x": X})[0], check, isa=ISAS[0])
    assert kernel is not None and info["used"] and info["tokens"] == "fold", info


# ---------------------------------------------------------------------------- tokens with lengths
TOKEN_LENGTH_CASES = {  # name -> (layers [(H, direction, linear_before_reset, flip, merge)], head, max_reads_zeros, k)
    "forward avg": ([(20, "forward", 1, (False,), "concat")], "avg", False, 1),
    "forward max, last output carried": ([(6, "forward", 1, (False,), "concat")], "max", False, 1),
    "go_backwards max, Y's zeros": ([(17, "reverse", 1, (True,), "concat")], "max", True, 1),
    "go_backwards last": ([(10, "reverse", 0, (False,), "concat")], "last", False, 1),
    "Bidirectional reset_after=False + GRU last, softmax": ([(9, "bidirectional", 0, (False, False), "concat"),
                                                             (33, "forward", 1, (False,), "concat")], "last", False, 5),
    "go_backwards sequence + Bidirectional sum avg": ([(12, "reverse", 0, (True,), "concat"),
                                                       (8, "bidirectional", 1, (False, False), "sum")], "avg", False, 3),
    "Bidirectional ave max": ([(7, "bidirectional", 1, (False, False), "ave")], "max", True, 1),
}
VOCAB, DIM = 50, 5


def _token_lengths_specs(case: str) -> tuple[FusedSpec, FusedSpec]:
    """(token spec, the same network on float features): random weights and an Embedding table (VOCAB, DIM)."""
    layers, head, zeros, k = TOKEN_LENGTH_CASES[case]
    rng = np.random.default_rng(len(case))
    built, width = [], DIM
    for H, direction, lbr, flip, merge in layers:
        D = 2 if direction == "bidirectional" else 1
        W, R = (rng.standard_normal((D, 3 * H, n)).astype(np.float32) * np.float32(0.4) for n in (width, H))
        B = rng.standard_normal((D, 6 * H)).astype(np.float32) * np.float32(0.1)
        built.append(FusedLayer(W=W, R=R, B=B, direction=direction, flip=flip, linear_before_reset=lbr, merge=merge))
        width = built[-1].width
    floats = FusedSpec(layers=built, head=head, lengths=True, max_reads_zeros=zeros,
                       activation="softmax" if k > 1 else "sigmoid",
                       head_w=rng.standard_normal((width, k)).astype(np.float32) * np.float32(0.5),
                       head_b=np.float32(0.1) * np.arange(1, k + 1, dtype=np.float32))
    table = rng.standard_normal((VOCAB, DIM)).astype(np.float32)  # (vocab, F)
    return replace(floats, embedding=table), floats


@needs_library
@pytest.mark.parametrize("case", list(TOKEN_LENGTH_CASES))
def test_token_lengths_are_the_float_lengths_path_on_the_embedding_rows(case):
    """gru_run_ids_lens, folded and gathered, every ISA, 1 and 2 threads: the bits of gru_run_lens on the ids'
    Embedding rows (NaN past each length) with the same lengths, for T = 13 and 1."""
    tokens, floats = _token_lengths_specs(case)
    rng = np.random.default_rng(3)
    compared = 0
    for T in (13, 1):
        for ids, lens in token_batches(T, VOCAB, rng):
            X = tokens.embedding[np.clip(ids, 0, VOCAB - 1)]  # (N, T, F)
            X[np.arange(T)[None, :] >= lens[:, None]] = np.nan
            for isa in ISAS:
                want = fused.FusedKernel(LIB, floats, isa).run_lengths(X, lens, threads=2)
                kernel = fused.FusedKernel(LIB, tokens, isa)
                for path in ("fold", "gather"):
                    kernel.token_path = path
                    assert kernel.token_path == path
                    for threads in (1, 2):
                        got = kernel.run_lengths(ids, lens, threads=threads)
                        bad = int((got != want).reshape(len(ids), -1).any(axis=1).sum())
                        assert not bad, f"{case} {isa} {path} T={T} N={len(ids)} threads={threads}: {bad} rows differ"
                        compared += got.size
    assert compared > 0


@needs_library
def test_an_id_0_before_a_length_is_refused():
    """Id 0 at a row's last real step: PaddingIdInLength (folded and gathered, nothing returned); at its first
    padded step: the row runs. An id outside the table in a real step, or a length outside 1 .. T: ValueError."""
    tokens, _ = _token_lengths_specs("forward avg")
    ids, lens = token_batches(9, VOCAB, np.random.default_rng(4))[0]
    kernel = fused.FusedKernel(LIB, tokens, ISAS[0])
    for path in ("fold", "gather"):
        kernel.token_path = path
        want = kernel.run_lengths(ids, lens, threads=2)
        row = int(np.flatnonzero(lens < 9)[0])
        past = ids.copy()
        past[row, lens[row]] = 0
        assert np.array_equal(kernel.run_lengths(past, lens, threads=2), want)
        inside = ids.copy()
        inside[row, lens[row] - 1] = 0
        with pytest.raises(fused.PaddingIdInLength, match="before its row's length"):
            kernel.run_lengths(inside, lens, threads=2)
        outside = ids.copy()
        outside[row, 0] = VOCAB
        with pytest.raises(ValueError, match="outside the Embedding table") as caught:
            kernel.run_lengths(outside, lens, threads=2)
        assert not isinstance(caught.value, fused.PaddingIdInLength)
        for bad in (0, 10):
            with pytest.raises(ValueError, match="lengths"):
                kernel.run_lengths(ids, np.where(np.arange(len(lens)) == row, bad, lens))


@needs_library
def test_the_self_check_token_rows_are_valid():
    """self_check_token_lengths: every length 1 .. T over the rows, no id 0 before a length, ids in the table
    everywhere, the padding id 0 of the input rows replaced; the kernel runs them."""
    T = 12
    ids, lens = fused.self_check_token_lengths(fused.self_check_ids(None, VOCAB, T), VOCAB)
    real = np.arange(T)[None, :] < lens[:, None]
    assert ids.shape[1] == T and set(lens.tolist()) == set(range(1, T + 1)) and lens[0] == T and lens[1] == 1
    assert (ids[real] != 0).all() and (ids[~real] != 0).all() and ids.min() >= 1 and ids.max() < VOCAB
    tokens, _ = _token_lengths_specs("go_backwards max, Y's zeros")
    assert np.isfinite(fused.FusedKernel(LIB, tokens, ISAS[0]).run_lengths(ids, lens)).all()


# ---------------------------------------------------------------------------- Dense tanh
def _ort_tanh(x: np.ndarray) -> np.ndarray:
    return _session(tanh_proto()).run(None, {"x": x})[0]


def _kernel_tanh(x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    LIB.gru_test_tanh(x.ctypes.data, y.ctypes.data, ctypes.c_long(len(x)))
    return y


def _bits_around(value: float, n: int) -> np.ndarray:
    """The 2n + 1 floats nearest ``value`` (n ulps either side)."""
    b = np.array([value], np.float32).view(np.int32)[0]
    return np.arange(b - n, b + n + 1, dtype=np.int64).astype(np.int32).view(np.float32)


@needs_library
@needs_fma_cpu
def test_the_heads_tanh_is_onnxruntimes_tanh_bit_for_bit():
    """gru_test_tanh (the head's mlas_tanh1) against onnxruntime's Tanh op on one node: 1e7 random floats in
    [-12, 12], every float within 2^16 ulps of +-9 (the clamp) and of +-1, every subnormal of both signs,
    the floats next to 0, +-inf, the largest floats and NaNs of both signs (compared as bits)."""
    rng = np.random.default_rng(0)
    subnormals = np.arange(1, 1 << 23, dtype=np.int32).view(np.float32)
    families = {
        "random [-12, 12]": rng.uniform(-12, 12, 10_000_000).astype(np.float32),
        "around +-9": np.concatenate([_bits_around(9.0, 1 << 16), _bits_around(-9.0, 1 << 16)]),
        "around +-1": np.concatenate([_bits_around(1.0, 1 << 16), _bits_around(-1.0, 1 << 16)]),
        "subnormals": np.concatenate([subnormals, -subnormals]),
        "specials": np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                              np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny, np.nan, -np.nan, 1e-30,
                              -1e-30, 8.999999, 9.000001], np.float32),
        "nan payloads": np.array([0x7FC00000, 0xFFC00000, 0x7FC12345, 0x7F800001, 0xFF812345], np.uint32)
        .view(np.float32),
    }
    total = 0
    for name, x in families.items():
        got, want = _kernel_tanh(x), _ort_tanh(x)
        differ = got.view(np.uint32) != want.view(np.uint32)
        assert not differ.any(), (f"{name}: {int(differ.sum())} of {len(x)} differ, e.g. x={x[differ][:4]} "
                                  f"kernel {got[differ][:4]} onnxruntime {want[differ][:4]}")
        total += len(x)
    assert total > 26_000_000


TANH_CASES = [  # (layers, head, dense, outputs, activation)
    ([(12, "forward", 1)], "avg", [(24, "tanh"), (6, "sigmoid")], 1, "sigmoid"),
    ([(9, "bidirectional", 0)], "avg", [(20, "tanh")], 4, "softmax"),
    ([(7, "reverse", 1)], "last", [(8, "relu"), (33, "tanh"), (5, "linear")], 3, "sigmoid"),
]


@needs_library
@needs_fma_cpu
@pytest.mark.parametrize("case", TANH_CASES, ids=lambda c: f"{c[1]}-{'+'.join(a for _, a in c[2])}-{c[4]}{c[3]}")
def test_a_tanh_dense_layer_reproduces_model_onnx_bit_for_bit(case):
    """GRU -> pooling -> Dense(tanh) [-> Dense ...] -> sigmoid or softmax head: read from the graph, and
    model.onnx's bits in every ISA, with the tanh's inputs past the +-9 clamp and zeros in the data."""
    layers, head, dense, outputs, activation = case
    rng = np.random.default_rng(len(dense) * 10 + outputs)
    F = 4
    proto, name = gru_graph(rng, F, layers, head, dense=dense, outputs=outputs, activation=activation, dense_scale=4.0)
    spec, sess = _spec(proto, name), _session(proto)
    assert [act for _, _, act in spec.dense] == [act for _, act in dense]
    X = (rng.standard_normal((203, 9, F)) * 3).astype(np.float32)
    X[:5] = 0
    X[5:9] = rng.choice(np.float32([-100, 100]), (4, 9, F))
    want = sess.run(None, {"x": X})[0].reshape(len(X), -1)
    pre = [f"d{i}_pre" for i, (_, act) in enumerate(dense) if act == "tanh"]
    probe = type(proto)()
    probe.CopyFrom(proto)
    probe.graph.output.extend(type(proto.graph.output[0])(name=p) for p in pre)  # the tanh inputs, as outputs
    for p, v in zip(pre, _session(probe).run(pre, {"x": X})):
        assert (np.abs(v) > 9).mean() > 0.01 and (np.abs(v) < 1).mean() > 0.01, p  # past the clamp, and not
    for isa in ISAS:
        got = fused.FusedKernel(LIB, spec, isa).run(X, threads=2).reshape(len(X), -1)
        assert np.array_equal(got, want), f"{isa}: {int((got != want).sum())} of {got.size} values differ"
