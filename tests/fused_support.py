"""Shared by the fused-kernel tests (tests/runtime/test_fused.py: tiny graphs and the committed
model; tests/export/test_fused_coverage.py: Keras models of every covered layer kind): the loaded
library and the ISA variants this CPU runs, the stress families, a float64 evaluation of any
covered network, writing a model.onnx + manifest folder, and padded variable-length batches. Reads GRU_KERNEL_LIBRARY (through
pipeline.runtime.fused): when it names a library that does not load, importing this module fails
rather than letting every kernel test skip.

Imports os, threading, numpy, pytest, pipeline.artifact and pipeline.runtime (TF-free) and tests/tiny_models.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from pipeline import artifact
from pipeline.runtime import fused
from pipeline.runtime.fused.onnx_reader import match_fused, parse_model
from tiny_models import tiny_manifest

EXPORTED = Path(__file__).resolve().parents[1] / "exported"
ATOL = fused.SELF_CHECK_ATOL

LIB, _WHY = fused.load_library()
if LIB is None and os.environ.get(fused.LIBRARY_ENV):  # a build asked for by path (make kernel-check) must load
    raise RuntimeError(f"{fused.LIBRARY_ENV}={os.environ[fused.LIBRARY_ENV]}: {_WHY}")
ISAS = fused.supported_isas(LIB) if LIB is not None else []
needs_library = pytest.mark.skipif(LIB is None, reason=f"fused library not built: {_WHY}")
# onnxruntime's MLAS runs its FMA kernels (sgemm, logistic) on CPUs with AVX2 and FMA; there the
# kernel's arithmetic is onnxruntime's, operation for operation (gru_kernel.c, "onnxruntime's
# activations"), and the numbers are the same bits. Elsewhere the contract is SELF_CHECK_ATOL.
needs_fma_cpu = pytest.mark.skipif("avx2" not in ISAS, reason="onnxruntime runs FMA kernels only on AVX2+FMA CPUs")


def stress_families(T: int, F: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Model-input families: random, +-100, zeros, constants, batch 1, odd batch, large batch."""
    return {
        "random": rng.standard_normal((64, T, F)).astype(np.float32) * 2,
        "+-100": rng.choice(np.float32([-100, 100]), size=(16, T, F)).astype(np.float32),
        "uniform +-100": rng.uniform(-100, 100, (16, T, F)).astype(np.float32),
        "zeros": np.zeros((3, T, F), np.float32),
        "constants": np.repeat(rng.uniform(-5, 5, (8, 1, F)).astype(np.float32), T, axis=1),
        "batch 1": rng.standard_normal((1, T, F)).astype(np.float32),
        "odd batch": rng.standard_normal((37, T, F)).astype(np.float32),
        "large": rng.standard_normal((1031, T, F)).astype(np.float32),
    }


def float64_proba(spec, X: np.ndarray) -> np.ndarray:
    """The same network evaluated in float64 (numpy): what both float32 forms approximate.
    Every layer kind the kernel covers: directions, reversed hand-on (flip), linear_before_reset 0/1,
    and every head: (N,) p for a binary head, (N, k) sigmoid outputs or softmax probabilities."""
    seq = X.astype(np.float64)  # (N, T, F)
    N, T = X.shape[:2]
    for layer in spec.layers:
        H, outs, lasts = layer.hidden, [], []
        for d in range(layer.directions):
            W, R, B = (a[d].astype(np.float64) for a in (layer.W, layer.R, layer.B))  # (3H, F), (3H, H), (6H,)
            h, Y = np.zeros((N, H)), np.zeros((N, T, H))
            for t in (range(T - 1, -1, -1) if layer.reverse(d) else range(T)):
                xw, hr = seq[:, t] @ W.T + B[:3 * H], h @ R.T + B[3 * H:]  # (N, 3H) each
                z = 1 / (1 + np.exp(-(xw[:, :H] + hr[:, :H])))
                r = 1 / (1 + np.exp(-(xw[:, H:2 * H] + hr[:, H:2 * H])))
                if layer.linear_before_reset:
                    n = np.tanh(xw[:, 2 * H:] + r * hr[:, 2 * H:])
                else:
                    n = np.tanh(xw[:, 2 * H:] + (r * h) @ R[2 * H:].T + B[5 * H:])
                h = (1 - z) * n + z * h
                Y[:, t] = h
            outs.append(Y[:, ::-1] if layer.flip[d] else Y)
            lasts.append(h)
        merge = getattr(layer, "merge", "concat")
        if merge == "concat":
            seq = np.concatenate(outs, axis=2)  # (N, T, D*H)
        else:  # a Bidirectional merge: (N, T, H)
            op = {"sum": np.add, "mul": np.multiply, "ave": lambda a, b: (a + b) * 0.5}[merge]
            seq, lasts = op(outs[0], outs[1]), [op(lasts[0], lasts[1])]
    v = {"avg": seq.mean(axis=1), "max": seq.max(axis=1)}.get(spec.head)  # (N, D*H)
    v = np.concatenate(lasts, axis=1) if v is None else v
    for W, b, act in getattr(spec, "dense", []):  # Dense layers between the pooling and the head
        v = v @ W.astype(np.float64) + b.astype(np.float64)
        v = (np.maximum(v, 0) if act == "relu" else 1 / (1 + np.exp(-v)) if act == "sigmoid" else np.tanh(v) if act == "tanh"
             else v)
    logits = v @ spec.head_w.astype(np.float64) + spec.head_b.astype(np.float64)  # (N, k)
    if spec.activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p = 1 / (1 + np.exp(-logits))
    return p[:, 0] if spec.binary else p


def kernel_for(model_bytes: bytes, isa: str, output: str = "probability") -> fused.FusedKernel:
    spec, why = match_fused(parse_model(model_bytes), "x", output)
    assert spec is not None, why
    return fused.FusedKernel(LIB, spec, isa)


def write_folder(folder: Path, proto, **manifest_kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / artifact.MODEL_FILE
    path.write_bytes(proto.SerializeToString())
    artifact.write_manifest(folder, tiny_manifest(artifact.sha256_file(path), proto.graph.input[0].type.tensor_type
                                                  .shape.dim[2].dim_value, **manifest_kw))
    return folder


def run_in_threads(work: Callable[[int], None], n: int) -> None:
    """work(0) .. work(n - 1), each on its own thread, all at once; returns when all are done."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def padded_batches(T: int, rng: np.random.Generator, F: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Variable-length batches, [(X (N, T, F) with NaN past each length, lengths (N,))]: 61 rows (not a multiple of
    a kernel block) with lengths 1 and T, a row of zeros, an all-zero step and zero values; T rows whose lengths
    are 1 .. T, all different (one block); one full row."""
    out = []
    for n, lens in ((61, rng.integers(1, T + 1, 61)), (T, rng.permutation(np.arange(1, T + 1))), (1, np.array([T]))):
        X = (rng.standard_normal((n, T, F)) * 2).astype(np.float32)
        lens = np.asarray(lens, np.int64)
        if n > 2:
            lens[:2] = T, 1
            X[2, :] = 0.0  # a row of real zeros
            X[3, 0] = 0.0  # a real all-zero step
            X[rng.random((n, T, F)) < 0.1] = 0.0
        for i, m in enumerate(lens):
            X[i, m:] = np.nan  # past each length: never read (the graph's Where replaces it)
        out.append((X, lens))
    return out


def token_batches(T: int, vocab: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Variable-length token batches, [(ids (N, T), lengths (N,))], the rows as ``padded_batches``: 61 rows with
    lengths 1 and T among them, T rows of all different lengths, one full row. Ids 1 .. vocab-1 before each
    length (the last id first in every other row and at step T-1 in every full row); past it the padding id 0,
    ids outside the table and real ids (the graph pads them to 0; the kernel never reads them)."""
    out = []
    for n, lens in ((61, rng.integers(1, T + 1, 61)), (T, rng.permutation(np.arange(1, T + 1))), (1, np.array([T]))):
        ids = rng.integers(1, vocab, (n, T))
        lens = np.asarray(lens, np.int64)
        if n > 2:
            lens[:2] = T, 1
        ids[::2, 0] = vocab - 1
        ids[:, -1] = vocab - 1
        junk = rng.choice(np.array([0, -5, vocab, 2 * vocab, 7]), (n, T))
        out.append((np.where(np.arange(T)[None, :] < lens[:, None], ids, junk), lens))
    return out
