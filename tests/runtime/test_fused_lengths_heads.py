"""Variable-length batches on the fused kernel beyond forward layers with the mean (issue 26), without any
graph: specs built in numpy (reverse and Bidirectional layers with every merge, stacked; last-state, mean and
max heads; k-way heads and Dense layers before the classifier). Without reversed hand-on or pooled padding
zeros, each row of a padded batch (lengths 1 .. T, NaN past them) gets the bits of its unpadded row run alone,
for every ISA and thread count; tests/runtime/test_kernel_sanitizers.py runs these under ASan/UBSan and TSan.
The exported graphs, bit for bit against onnxruntime on model.onnx with lengths:
tests/export/test_fused_lengths_coverage.py.

Imports numpy, pytest, pipeline.runtime.fused and tests/fused_support.py (no TensorFlow, no onnx).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime import fused
from pipeline.runtime.fused.onnx_reader import FusedLayer, FusedSpec

from fused_support import ISAS, LIB, needs_library, padded_batches

F = 3


def _numpy_spec(layers, head: str, seed: int, outputs: int = 1, activation: str = "sigmoid", dense=()) -> FusedSpec:
    """A variable-length FusedSpec with random weights: ``layers`` [(H, direction, linear_before_reset[, merge])],
    input side first, nothing handed on reversed; ``dense`` [(units, activation)] before the head."""
    rng = np.random.default_rng(seed)
    built, width = [], F
    for H, direction, lbr, *merge in layers:
        D = 2 if direction == "bidirectional" else 1
        W, R = (rng.standard_normal((D, 3 * H, n)).astype(np.float32) * np.float32(0.4) for n in (width, H))
        B = rng.standard_normal((D, 6 * H)).astype(np.float32) * np.float32(0.1)
        built.append(FusedLayer(W=W, R=R, B=B, direction=direction, flip=(False,) * D, linear_before_reset=lbr,
                                merge=merge[0] if merge else "concat"))
        width = built[-1].width
    hidden = []
    for units, act in dense:
        hidden.append((rng.standard_normal((width, units)).astype(np.float32) * np.float32(0.4),
                       rng.standard_normal(units).astype(np.float32) * np.float32(0.2), act))
        width = units
    return FusedSpec(layers=built, head=head, activation=activation, dense=hidden, lengths=True,
                     head_w=rng.standard_normal((width, outputs)).astype(np.float32) * np.float32(0.5),
                     head_b=np.float32(0.1) * np.arange(1, outputs + 1, dtype=np.float32))


@needs_library
@pytest.mark.parametrize("layers,head,outputs,activation,dense", [
    ([(13, "reverse", 1)], "last", 1, "sigmoid", ()),
    ([(9, "bidirectional", 0)], "last", 3, "softmax", [(8, "relu")]),
    ([(6, "bidirectional", 1, "sum"), (17, "reverse", 0)], "last", 4, "sigmoid", ()),
    ([(9, "bidirectional", 1, "mul"), (5, "forward", 1)], "max", 1, "sigmoid", ()),
    ([(7, "bidirectional", 1), (20, "bidirectional", 0, "ave")], "avg", 5, "softmax", ()),
    ([(5, "forward", 1), (7, "bidirectional", 1, "ave"), (11, "reverse", 1)], "max", 1, "sigmoid", [(6, "sigmoid")]),
    ([(4, "reverse", 1), (33, "bidirectional", 1)], "avg", 1, "sigmoid", ()),
])
def test_rows_get_the_bits_they_get_alone(layers, head, outputs, activation, dense):
    """Without reversed hand-on or pooled padding zeros, each row of a padded batch (lengths 1 .. T, NaN past
    them) gets the bits of its unpadded row run alone (gru_run), for every ISA and thread count."""
    spec = _numpy_spec(layers, head, seed=sum(la[0] for la in layers), outputs=outputs, activation=activation,
                       dense=dense)
    rng = np.random.default_rng(12)
    for X, lens in padded_batches(17, rng):
        for isa in ISAS:
            kernel = fused.FusedKernel(LIB, spec, isa)
            alone = np.concatenate([kernel.run(X[i:i + 1, :n], threads=1) for i, n in enumerate(lens)])
            for threads in (1, 2):
                assert np.array_equal(kernel.run_lengths(X, lens, threads=threads), alone), (isa, threads, len(X))


@needs_library
def test_a_forward_output_reversed_in_time_is_refused():
    """No export hands a forward direction's output on reversed: the kernel refuses it rather than guess."""
    spec = _numpy_spec([(5, "forward", 1), (4, "forward", 1)], "avg", seed=2)
    spec.layers[0].flip = (True,)
    X, lens = padded_batches(6, np.random.default_rng(1))[0]
    with pytest.raises(ValueError, match="reversed in time"):
        fused.FusedKernel(LIB, spec, ISAS[-1]).run_lengths(X, lens)


def _float64_lengths_proba(spec: FusedSpec, X: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The variable-length network in float64 (numpy), as model.onnx computes it: each direction over the row's
    own steps (a reverse one from step L-1, zero state), Y zero past L; a flipped output is the whole padded Y
    reversed in time; the next layer and the mean read positions 0 .. L-1; the max reads all T positions when
    ``spec.max_reads_zeros`` (else the real ones); the last state at the row's end (reverse: step 0).
    (N, k) probabilities."""
    seq, (N, T) = X.astype(np.float64), X.shape[:2]
    for layer in spec.layers:
        H, outs, lasts = layer.hidden, [], []
        for d in range(layer.directions):
            W, R, B = (a[d].astype(np.float64) for a in (layer.W, layer.R, layer.B))  # (3H, F), (3H, H), (6H,)
            Y, last = np.zeros((N, T, H)), np.zeros((N, H))
            for i, L in enumerate(lens):
                h = np.zeros(H)
                for t in (range(L - 1, -1, -1) if layer.reverse(d) else range(L)):
                    xw, hr = seq[i, t] @ W.T + B[:3 * H], h @ R.T + B[3 * H:]
                    z = 1 / (1 + np.exp(-(xw[:H] + hr[:H])))
                    r = 1 / (1 + np.exp(-(xw[H:2 * H] + hr[H:2 * H])))
                    n = np.tanh(xw[2 * H:] + (r * hr[2 * H:] if layer.linear_before_reset
                                              else (r * h) @ R[2 * H:].T + B[5 * H:]))
                    h = (1 - z) * n + z * h
                    Y[i, t] = h
                last[i] = h
            outs.append(Y[:, ::-1] if layer.flip[d] else Y)
            lasts.append(last)
        if layer.merge == "concat":
            seq = np.concatenate(outs, axis=2)  # (N, T, D*H)
        else:
            op = {"sum": np.add, "mul": np.multiply, "ave": lambda a, b: (a + b) * 0.5}[layer.merge]
            seq, lasts = op(outs[0], outs[1]), [op(lasts[0], lasts[1])]
    real = np.arange(T)[None, :, None] < lens[:, None, None]  # (N, T, 1)
    if spec.head == "avg":
        v = (seq * real).sum(axis=1) / lens[:, None]
    elif spec.head == "max":
        v = np.where(real | spec.max_reads_zeros, seq, -np.inf).max(axis=1)
    else:
        v = np.concatenate(lasts, axis=1)
    for W, b, act in spec.dense:
        v = v @ W.astype(np.float64) + b.astype(np.float64)
        v = np.maximum(v, 0) if act == "relu" else 1 / (1 + np.exp(-v)) if act == "sigmoid" else v
    logits = v @ spec.head_w.astype(np.float64) + spec.head_b.astype(np.float64)
    if spec.activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-logits))


@needs_library
@pytest.mark.parametrize("layers,flips,head,zeros", [
    ([(6, "reverse", 1), (9, "forward", 0)], [(True,), (False,)], "last", False),    # go_backwards sequence + GRU
    ([(8, "reverse", 1)], [(True,)], "avg", False),                                 # go_backwards mean
    ([(8, "reverse", 0)], [(True,)], "max", True),                                  # go_backwards max: Y's zeros
    ([(5, "bidirectional", 1), (7, "reverse", 1)], [(False, False), (True,)], "avg", False),
    ([(7, "bidirectional", 1, "sum")], [(False, False)], "max", True),              # Bidirectional max: Y's zeros
])
def test_reversed_hand_on_and_pooled_zeros_follow_the_graph(layers, flips, head, zeros):
    """Where a row's numbers depend on the batch's T (a go_backwards output reversed over the whole padded Y; a
    max that reads Y's zeros past the length): the kernel is within 1e-5 of the float64 network with those
    semantics, and far from the same network read as if each row were alone."""
    spec = _numpy_spec(layers, head, seed=7 + len(layers))
    for layer, flip in zip(spec.layers, flips):
        layer.flip = flip
    spec.max_reads_zeros = zeros
    X, lens = padded_batches(15, np.random.default_rng(9))[0]
    exact = _float64_lengths_proba(spec, np.nan_to_num(X), lens)
    for isa in ISAS:
        got = fused.FusedKernel(LIB, spec, isa).run_lengths(X, lens, threads=2).reshape(exact.shape)
        assert np.abs(got - exact).max() <= 1e-5, isa
    short = lens < X.shape[1]
    alone = np.concatenate([_float64_lengths_proba(spec, np.nan_to_num(X[i:i + 1, :n]), lens[i:i + 1])
                            for i, n in enumerate(lens)])
    assert np.abs(alone - exact)[short].max() > 1e-3  # the test tells the two readings apart
