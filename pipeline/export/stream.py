"""Streaming graph export: ``stream.onnx`` with explicit GRU states, verified against Keras.

Owns: writing ``stream.onnx`` next to ``model.onnx``, the manifest ``stream`` entry, and the check
that streaming the graph chunk by chunk reproduces Keras run with ``initial_state``/``return_state``.
Imports: numpy, onnxruntime, keras (build stage only), pipeline.export.native.
Writes: ``<staging>/stream.onnx``; fills ``manifest["stream"]`` (the caller writes the manifest).

The Keras reference is a *twin* of the classifier: the same layers and weights, except that each
GRU is rebuilt with ``return_state=True`` and called with ``initial_state``, so a sequence can be
fed to Keras in chunks with the hidden states carried across. The twin is itself checked against
the original model on whole sequences, so the chain is Keras model == Keras twin (chunked) ==
stream.onnx (chunked), hidden states included.

Manifest entry, when the model can stream::

    "stream": {"supported": true, "file": "stream.onnx", "sha256": ..., "input": "x",
               "output": "probability",
               "states": [{"input": "h_in_0", "output": "h_out_0", "shape": [D, H]}, ...],
               "verification": {"passed": true, "atol": 1e-6, "max_abs_error_proba": ...,
                                "max_abs_error_state": ..., "chunkings": ..., "sequences": ...}}

otherwise ``{"supported": false, "reason": "<why>"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline import artifact
from pipeline.errors import VerificationError

__all__ = ["export_stream", "keras_stream_twin", "verify_stream", "random_chunking", "STREAM_ATOL"]

STREAM_ATOL = 1e-6  # max |Keras - ONNX| per chunk (probabilities; states relative above 1) when no build config; builds use verify.atol
TWIN_ATOL = 1e-5            # max |twin on whole sequences - original model| (Keras vs Keras)
_IDENTITY = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
             "ActivityRegularization"}


def _log(message: str) -> None:
    print(message, flush=True)


def random_chunking(T: int, rng: np.random.Generator, max_chunk: Optional[int] = None) -> list[int]:
    """Random chunk lengths (>= 1) summing to T."""
    max_chunk = max_chunk or T
    sizes, left = [], T
    while left:
        n = int(rng.integers(1, min(max_chunk, left) + 1))
        sizes.append(n)
        left -= n
    return sizes


class keras_stream_twin:  # noqa: N801  (used like a function returning a callable)
    """Keras twin of a streamable classifier: ``twin(x_chunk, states) -> (proba, new_states)``.

    x_chunk: scaled (B, T_chunk, F) float32; states: list of (B, H) arrays, one per GRU layer.
    """

    def __init__(self, model) -> None:
        import keras

        self._steps: list[tuple[str, Any]] = []
        self.state_widths: list[int] = []  # in graph order: GRU states, then the average's mean and count
        for layer in model.layers:
            kind = type(layer).__name__
            if kind in ("InputLayer", "Masking") or kind in _IDENTITY:
                # Masking: stream chunks are never padded and real steps never equal the mask value
                # (the runtime refuses them), so the mask is all-true.
                continue
            if kind == "GRU":
                config = dict(layer.get_config(), return_state=True, name=f"{layer.name}_twin",
                              dropout=0.0, recurrent_dropout=0.0)
                twin = keras.layers.GRU.from_config(config)
                twin.build((None, None, int(layer.cell.kernel.shape[0])))
                twin.set_weights(layer.get_weights())
                self._steps.append(("gru", twin))
                self.state_widths.append(int(layer.units))
            elif kind == "GlobalAveragePooling1D":
                # Running mean and step count carried across chunks, like stream.onnx's avg_mean/avg_count.
                self._steps.append(("avg", None))
                self.state_widths += [int(layer.output.shape[-1]), 1]
            elif kind in ("Dense", "Embedding"):
                self._steps.append(("layer", layer))
            else:
                raise ValueError(f"layer {layer.name!r} of type {kind} has no streaming twin")

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


def _onnx_stream_runner(path: Path, input_name: str, output_name: str, state_names: list[tuple[str, str]]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    outs = [output_name] + [o for _, o in state_names]

    def run(x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {input_name: x}
        for (hi, _), s in zip(state_names, states):
            feeds[hi] = s[None]  # (1, B, H): D = 1 for streamable (unidirectional) GRUs and the average's mean/count
        res = sess.run(outs, feeds)
        return res[0].reshape(-1), [r[0] for r in res[1:]]

    return run


def verify_stream(twin, run_onnx, keras_full: Callable[[np.ndarray], np.ndarray], F: int, T: int,
                  seed: int, n_sequences: int = 8, n_chunkings: int = 6, atol: float = STREAM_ATOL) -> dict:
    """Stream random sequences through Keras (twin) and ONNX with the same random chunkings.

    Chunkings: all length-1 chunks, one whole chunk, and random ones. After every chunk the
    probability and every hidden state must agree within ``atol``; the twin's final probability
    must also match the original model on the whole sequence (``TWIN_ATOL``).
    Raises VerificationError on any disagreement.
    """
    rng = np.random.default_rng(seed + 7919)
    X = rng.standard_normal((n_sequences, T, F)).astype(np.float32)
    X[: n_sequences // 4] *= 3.0  # some large-magnitude inputs to drive the gates to saturation
    chunkings = [[1] * T, [T]] + [random_chunking(T, rng, max(2, T // 2)) for _ in range(n_chunkings - 2)]
    full = keras_full(X)
    err_p = err_s = err_twin = 0.0
    for sizes in chunkings:
        ks = twin.zero_states(n_sequences)
        os_ = [s.copy() for s in ks]
        t = 0
        for n in sizes:
            chunk = X[:, t:t + n]
            t += n
            kp, ks = twin(chunk, ks)
            op, os_ = run_onnx(chunk, os_)
            err_p = max(err_p, float(np.abs(kp - op).max()))
            # States: absolute below 1, relative above (relu GRUs can grow states without bound).
            err_s = max(err_s, max(float((np.abs(a - b) / np.maximum(1.0, np.abs(a))).max()) for a, b in zip(ks, os_)))
            if err_p > atol or err_s > atol:
                raise VerificationError(
                    f"stream.onnx disagrees with Keras (initial_state/return_state) after step {t} of chunking "
                    f"{sizes[:8]}{'...' if len(sizes) > 8 else ''}: max |dp| = {err_p:.3g}, max |dh| = {err_s:.3g} "
                    f"> {atol:g}")
        err_twin = max(err_twin, float(np.abs(kp - full).max()))
        if err_twin > TWIN_ATOL:
            raise VerificationError(
                f"Keras streaming twin disagrees with the model on whole sequences: {err_twin:.3g} > {TWIN_ATOL:g}")
    return {"passed": True, "atol": atol, "max_abs_error_proba": err_p, "max_abs_error_state": err_s,
            "max_abs_error_twin_vs_model": err_twin, "sequences": n_sequences, "timesteps": T,
            "chunkings": len(chunkings)}


def export_stream(model, staging_dir: str | Path, manifest: dict[str, Any], cfg=None,
                  keras_proba_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  T: Optional[int] = None, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Write and verify ``stream.onnx`` when ``model`` can stream; record ``manifest["stream"]``.

    Args:
        model: the trained Keras classifier.
        staging_dir: folder that already holds model.onnx; stream.onnx is written beside it.
        manifest: the manifest being built (``input``/``output`` names are read from it).
        cfg: BuildConfig (opset and seed), or None for opset 17 / seed 0.
        keras_proba_fn: scaled (N, T, F) -> (N,) probabilities of the original model; default
            ``model(X, training=False)``.
        T: sequence length used for verification (default: manifest timesteps_trained, capped at 50).
    Returns:
        the manifest ``stream`` entry.
    Raises:
        VerificationError: the streaming graph disagrees with Keras.
    """
    from pipeline.export.native import UnsupportedModelError, export_native, stream_support

    reason = stream_support(model)
    input_name = manifest["input"]["name"]
    if reason is None and manifest["input"].get("kind", "features") != "features":
        reason = "only float feature inputs can be streamed"
    proto = None
    if reason is None:
        opset = cfg.export.opset if cfg is not None else 17
        try:
            proto = export_native(model, input_name, opset, stateful=True)
        except UnsupportedModelError as exc:
            reason = str(exc)
    if proto is None:
        entry = {"supported": False, "reason": reason}
        manifest["stream"] = entry
        log(f"  stream: not supported ({reason})")
        return entry

    out_name = proto.graph.output[0].name
    state_pairs = []
    for vi in proto.graph.input[1:]:
        d = vi.type.tensor_type.shape.dim
        # h_in_i -> h_out_i (GRU states), avg_mean_in -> avg_mean_out, avg_count_in -> avg_count_out
        state_pairs.append((vi.name, vi.name.replace("_in", "_out", 1), [int(d[0].dim_value), int(d[2].dim_value)]))
    path = Path(staging_dir) / artifact.STREAM_MODEL_FILE
    path.write_bytes(proto.SerializeToString())

    F = int(manifest["input"]["shape"][2])
    T = int(T or min(int(manifest.get("timesteps_trained") or 20), 50))
    seed = cfg.seed if cfg is not None else 0
    twin = keras_stream_twin(model)
    if keras_proba_fn is None:
        keras_proba_fn = lambda Z: np.asarray(model(Z, training=False), np.float32).reshape(-1)  # noqa: E731
    runner = _onnx_stream_runner(path, input_name, out_name, [(a, b) for a, b, _ in state_pairs])
    # Keras vs ONNX uses the build's equivalence tolerance (1e-5 by default), like model.onnx;
    # the runtime-vs-runtime streaming identity (<= 1e-6) is a test of pipeline.runtime.stream.
    atol = cfg.verify.atol if cfg is not None else STREAM_ATOL
    verification = verify_stream(twin, runner, keras_proba_fn, F, T, seed, atol=atol)
    entry = {
        "supported": True,
        "file": artifact.STREAM_MODEL_FILE,
        "sha256": artifact.sha256_file(path),
        "input": input_name,
        "output": out_name,
        "states": [{"input": a, "output": b, "shape": s} for a, b, s in state_pairs],
        "verification": verification,
    }
    manifest["stream"] = entry
    log(f"  stream: {artifact.STREAM_MODEL_FILE} with {len(state_pairs)} state(s), verified against Keras "
        f"initial_state/return_state over {verification['chunkings']} chunkings "
        f"(max |dp| {verification['max_abs_error_proba']:.2g}, max |dh| {verification['max_abs_error_state']:.2g})")
    return entry
