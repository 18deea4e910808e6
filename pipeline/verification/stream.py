"""Stream verification: stream.onnx fed chunk by chunk equals Keras fed the same chunks.

Owns: the onnxruntime runner of stream.onnx, random chunkings and the check ``verify_stream``.
The Keras side arrives as objects (``pipeline.keras_source.run.KerasChunkRunner`` and a whole-sequence
probability function): this module never imports Keras.
Layer: verification. Imports: numpy, pipeline.runtime.sessions, pipeline.preprocessing.
Reads: stream.onnx. Writes: nothing.

The chain checked is: Keras model on whole sequences == Keras chunk by chunk == stream.onnx chunk by
chunk, states included. stream.onnx takes raw features (it scales them itself): with a
preprocessing entry, ONNX gets the raw sequences and Keras ``apply_preprocessing`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline.errors import VerificationError
from pipeline.verification.tolerances import CHUNKED_VS_WHOLE_ATOL, STREAM_ATOL

__all__ = ["StreamPlan", "onnx_chunk_runner", "random_chunking", "verify_stream"]


def random_chunking(T: int, rng: np.random.Generator, max_chunk: Optional[int] = None) -> list[int]:
    """Random chunk lengths (>= 1) summing to T."""
    max_chunk = max_chunk or T
    sizes, left = [], T
    while left:
        n = int(rng.integers(1, min(max_chunk, left) + 1))
        sizes.append(n)
        left -= n
    return sizes


def onnx_chunk_runner(path: Path, input_name: str, output_name: str, state_names: list[tuple[str, str]]):
    """stream.onnx at ``path`` as ``run(x_chunk, states) -> (proba, new_states)``, like KerasChunkRunner."""
    from pipeline.runtime.sessions import open_session

    sess = open_session(path, threads=1)
    outs = [output_name] + [o for _, o in state_names]

    def run(x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {input_name: x}
        for (hi, _), s in zip(state_names, states):
            feeds[hi] = s[None]  # (1, B, H): D = 1 for streamable (unidirectional) GRUs and the average's mean/count
        res = sess.run(outs, feeds)
        p = res[0]  # (B, 1) p(class 1) or (B, k)
        return (p.reshape(-1) if p.shape[-1] == 1 else p), [r[0] for r in res[1:]]

    return run


@dataclass(frozen=True)
class StreamPlan:
    """What ``verify_stream`` feeds: ``sequences`` random (T, F) sequences, each under ``chunkings`` chunkings.

    ``preprocessing`` is the manifest entry stream.onnx embeds: the random sequences are then drawn
    on the scaled scale, mapped to raw for ONNX, and Keras gets ``apply_preprocessing`` of the raw ones.
    """

    F: int
    T: int
    seed: int = 0
    atol: float = STREAM_ATOL           # max |Keras - ONNX| per chunk, probabilities and states
    sequences: int = 8
    chunkings: int = 6
    preprocessing: Optional[dict[str, Any]] = None


def verify_stream(keras_chunks, run_onnx, keras_full: Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray],
                  plan: StreamPlan) -> dict:
    """Stream random sequences through Keras (twin) and ONNX with the same random chunkings.

    Args:
        keras_chunks: ``(x_chunk, states) -> (proba, new_states)`` on scaled features, with
            ``zero_states(batch)`` (``pipeline.keras_source.run.KerasChunkRunner``).
        run_onnx: the same contract on what stream.onnx takes (raw features when the plan has a
            preprocessing entry); ``onnx_chunk_runner``.
        keras_full: (scaled (N, T, F), None) -> probabilities ((N,) or (N, k)) of the original model on
            whole sequences.
        plan: sizes, seed, tolerance and preprocessing.

    Chunkings: all length-1 chunks, one whole chunk, and random ones. After every chunk the
    probability and every state must agree within ``plan.atol``; Keras' chunked final probability must
    also match the original model on the whole sequence (``CHUNKED_VS_WHOLE_ATOL``).
    Raises VerificationError on any disagreement.
    """
    F, T, seed, atol, n_sequences, preprocessing = plan.F, plan.T, plan.seed, plan.atol, plan.sequences, plan.preprocessing
    rng = np.random.default_rng(seed + 7919)
    X = rng.standard_normal((n_sequences, T, F)).astype(np.float32)
    X[: n_sequences // 4] *= 3.0  # some large-magnitude inputs to drive the gates to saturation
    X_onnx = X
    if preprocessing is not None and preprocessing.get("type", "none") != "none":
        from pipeline.preprocessing import apply_preprocessing
        from pipeline.verification.equivalence import raw_from_scaled

        X_onnx = raw_from_scaled(X, preprocessing)            # (N, T, F) raw, what stream.onnx is fed
        X = apply_preprocessing(X_onnx, preprocessing)          # what Keras is fed: the graph's own scaling
    chunkings = [[1] * T, [T]] + [random_chunking(T, rng, max(2, T // 2)) for _ in range(plan.chunkings - 2)]
    full = keras_full(X, None)
    err_p = err_s = err_whole = 0.0
    for sizes in chunkings:
        ks = keras_chunks.zero_states(n_sequences)
        os_ = [s.copy() for s in ks]
        t = 0
        for n in sizes:
            kp, ks = keras_chunks(X[:, t:t + n], ks)
            op, os_ = run_onnx(X_onnx[:, t:t + n], os_)
            t += n
            err_p = max(err_p, float(np.abs(kp - op).max()))
            # States: absolute below 1, relative above (relu GRUs can grow states without bound).
            err_s = max(err_s, max(float((np.abs(a - b) / np.maximum(1.0, np.abs(a))).max()) for a, b in zip(ks, os_)))
            if err_p > atol or err_s > atol:
                raise VerificationError(
                    f"stream.onnx disagrees with Keras (initial_state/return_state) after step {t} of chunking "
                    f"{sizes[:8]}{'...' if len(sizes) > 8 else ''}: max |dp| = {err_p:.3g}, max |dh| = {err_s:.3g} "
                    f"> {atol:g}")
        err_whole = max(err_whole, float(np.abs(kp - full).max()))
        if err_whole > CHUNKED_VS_WHOLE_ATOL:
            raise VerificationError(
                f"Keras run chunk by chunk disagrees with the model on whole sequences: {err_whole:.3g} > {CHUNKED_VS_WHOLE_ATOL:g}")
    return {"passed": True, "atol": atol, "max_abs_error_proba": err_p, "max_abs_error_state": err_s,
            "max_abs_error_twin_vs_model": err_whole, "sequences": n_sequences, "timesteps": T,
            "chunkings": len(chunkings)}
