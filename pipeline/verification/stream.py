"""Stream verification: stream.onnx fed chunk by chunk equals Keras fed the same chunks.

Owns: ``KerasChunkRunner`` (the classifier's own layers and weights run chunk by chunk, each GRU
with ``initial_state``/``return_state``, the average head as a carried running mean and count),
the onnxruntime runner of stream.onnx, random chunkings and the check ``verify_stream``.
Imports: numpy, keras lazily, pipeline.runtime.sessions. Reads: stream.onnx. Writes: nothing.

The chain checked is: Keras model on whole sequences == Keras chunk by chunk == stream.onnx chunk by
chunk, states included. stream.onnx takes raw features (it scales them itself): with a
preprocessing entry, ONNX gets the raw sequences and Keras ``apply_preprocessing`` of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline.errors import VerificationError
from pipeline.verification.tolerances import CHUNKED_VS_WHOLE_ATOL, STREAM_ATOL

__all__ = ["KerasChunkRunner", "onnx_chunk_runner", "random_chunking", "verify_stream"]

_IDENTITY_AT_INFERENCE = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                          "ActivityRegularization"}


def random_chunking(T: int, rng: np.random.Generator, max_chunk: Optional[int] = None) -> list[int]:
    """Random chunk lengths (>= 1) summing to T."""
    max_chunk = max_chunk or T
    sizes, left = [], T
    while left:
        n = int(rng.integers(1, min(max_chunk, left) + 1))
        sizes.append(n)
        left -= n
    return sizes


class KerasChunkRunner:
    """A streamable classifier run by Keras chunk by chunk: ``runner(x_chunk, states) -> (proba, new_states)``.

    x_chunk: scaled (B, T_chunk, F) float32; states: list of arrays in stream.onnx's order: (B, H) per GRU
    layer, then the average head's running mean (B, H) and step count (B, 1).
    Each GRU is rebuilt with ``return_state=True`` and called with ``initial_state``; same weights.
    """

    def __init__(self, model) -> None:
        import keras

        self._steps: list[tuple[str, Any]] = []
        self.state_widths: list[int] = []  # in graph order: GRU states, then the average's mean and count
        for layer in model.layers:
            kind = type(layer).__name__
            if kind in ("InputLayer", "Masking") or kind in _IDENTITY_AT_INFERENCE:
                # Masking: stream chunks are never padded and real steps never equal the mask value
                # (the runtime refuses them), so the mask is all-true.
                continue
            if kind == "GRU":
                config = dict(layer.get_config(), return_state=True, name=f"{layer.name}_stepwise",
                              dropout=0.0, recurrent_dropout=0.0)
                stepwise = keras.layers.GRU.from_config(config)
                stepwise.build((None, None, int(layer.cell.kernel.shape[0])))
                stepwise.set_weights(layer.get_weights())
                self._steps.append(("gru", stepwise))
                self.state_widths.append(int(layer.units))
            elif kind == "GlobalAveragePooling1D":
                # Running mean and step count carried across chunks, like stream.onnx's avg_mean/avg_count.
                self._steps.append(("avg", None))
                self.state_widths += [int(layer.output.shape[-1]), 1]
            elif kind in ("Dense", "Embedding", "Normalization"):  # no state across time steps
                self._steps.append(("layer", layer))
            else:
                raise ValueError(f"layer {layer.name!r} of type {kind} cannot be run chunk by chunk")

    def __call__(self, x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        h = x
        new_states, i = [], 0
        for kind, layer in self._steps:
            if kind == "gru":
                out = layer(h, initial_state=[states[i]], training=False)
                h, s = out[0], out[1]
                new_states.append(np.asarray(s, dtype=np.float32))
                i += 1
            elif kind == "avg":
                seq = np.asarray(h, dtype=np.float32)  # (B, T_chunk, H)
                count = states[i + 1] + np.float32(seq.shape[1])  # (B, 1)
                h = (states[i] * states[i + 1] + seq.sum(axis=1, dtype=np.float32)) / count  # (B, H) mean so far
                new_states += [h, count]
                i += 2
            else:
                h = layer(h, training=False)
        return np.asarray(h, dtype=np.float32).reshape(-1), new_states

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, h), np.float32) for h in self.state_widths]


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
        return res[0].reshape(-1), [r[0] for r in res[1:]]

    return run


def verify_stream(keras_chunks, run_onnx, keras_full: Callable[[np.ndarray], np.ndarray], F: int, T: int,
                  seed: int, n_sequences: int = 8, n_chunkings: int = 6, atol: float = STREAM_ATOL,
                  preprocessing: Optional[dict[str, Any]] = None) -> dict:
    """Stream random sequences through Keras (twin) and ONNX with the same random chunkings.

    ``keras_chunks`` and ``keras_full`` take scaled features; ``run_onnx`` takes raw features when
    ``preprocessing`` (the manifest entry the graph embeds) is given: the random sequences are then
    drawn on the scaled scale, mapped to raw, and Keras gets ``apply_preprocessing`` of the raw ones.

    Chunkings: all length-1 chunks, one whole chunk, and random ones. After every chunk the
    probability and every state must agree within ``atol``; Keras' chunked final probability must
    also match the original model on the whole sequence (``CHUNKED_VS_WHOLE_ATOL``).
    Raises VerificationError on any disagreement.
    """
    rng = np.random.default_rng(seed + 7919)
    X = rng.standard_normal((n_sequences, T, F)).astype(np.float32)
    X[: n_sequences // 4] *= 3.0  # some large-magnitude inputs to drive the gates to saturation
    X_onnx = X
    if preprocessing is not None and preprocessing.get("type", "none") != "none":
        from pipeline.preprocessing import apply_preprocessing
        from pipeline.verification.equivalence import raw_from_scaled

        X_onnx = raw_from_scaled(X, preprocessing)            # (N, T, F) raw, what stream.onnx is fed
        X = apply_preprocessing(X_onnx, preprocessing)          # what Keras is fed: the graph's own scaling
    chunkings = [[1] * T, [T]] + [random_chunking(T, rng, max(2, T // 2)) for _ in range(n_chunkings - 2)]
    full = keras_full(X)
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
