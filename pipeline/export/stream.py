"""Streaming graph export: ``stream.onnx`` with explicit states, verified against Keras.

Owns: writing ``stream.onnx`` next to ``model.onnx`` and the manifest ``stream`` entry.
Imports: numpy, pipeline.export.native, pipeline.export.scaling, pipeline.verification (the chunked check).
Writes: ``<staging>/stream.onnx``; fills ``manifest["stream"]`` (the caller writes the manifest).

stream.onnx takes raw features like model.onnx (``pipeline.export.scaling`` puts the scaling in
the graph; a stream has no padding, so no padding rule) and carries its states as inputs and outputs: the hidden state of each GRU layer
(``h_in_i`` / ``h_out_i``, (1, batch, H)) and, for an average-pooling head, the running mean and the
step count (``avg_mean_in/out`` (1, batch, H), ``avg_count_in/out`` (1, batch, 1)). It is checked
chunk by chunk against the Keras model run with ``initial_state``/``return_state``
(pipeline.verification.stream).

Manifest entry, when the model can stream::

    "stream": {"supported": true, "file": "stream.onnx", "sha256": ..., "input": "x",
               "output": "probability",
               "states": [{"input": "h_in_0", "output": "h_out_0", "shape": [D, H]}, ...],
               "verification": {"passed": true, "atol": 1e-5, "max_abs_error_proba": ...,
                                "max_abs_error_state": ..., "chunkings": ..., "sequences": ...}}

otherwise ``{"supported": false, "reason": "<why>"}``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline import artifact
from pipeline.verification.tolerances import STREAM_ATOL

__all__ = ["export_stream"]


def _log(message: str) -> None:
    print(message, flush=True)


def export_stream(model, staging_dir: str | Path, manifest: dict[str, Any], opset: int = 17,
                  atol: float = STREAM_ATOL, seed: int = 0,
                  keras_proba_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  T: Optional[int] = None, log: Callable[[str], None] = _log,
                  preprocessing: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write and verify ``stream.onnx`` when ``model`` can stream; record ``manifest["stream"]``.

    Args:
        model: the trained Keras classifier.
        staging_dir: folder that already holds model.onnx; stream.onnx is written beside it.
        manifest: the manifest being built (``input``/``output`` names are read from it).
        opset: ONNX opset of stream.onnx.
        atol: max |Keras - ONNX| per chunk (builds pass their verify.atol).
        seed: seeds the random sequences and chunkings.
        keras_proba_fn: scaled (N, T, F) -> (N,) probabilities of the original model; default
            ``keras_proba(model, X)``.
        T: sequence length used for verification (default: manifest timesteps_trained, capped at 50).
        log: progress lines.
        preprocessing: the manifest preprocessing entry; stream.onnx then scales its raw input itself
            and is verified on raw sequences (default: none, the graph takes what the model takes).
    Returns:
        the manifest ``stream`` entry.
    Raises:
        VerificationError: the streaming graph disagrees with Keras.
    """
    from pipeline.export.native import UnsupportedModelError, export_native, stream_support
    from pipeline.export.scaling import embed_preprocessing
    from pipeline.verification.keras_reference import keras_proba
    from pipeline.verification import stream as stream_check

    reason = stream_support(model)
    input_name = manifest["input"]["name"]
    if reason is None and manifest["input"].get("kind", "features") != "features":
        reason = "only float feature inputs can be streamed"
    proto = None
    if reason is None:
        try:
            proto = export_native(model, input_name, opset, stateful=True)
        except UnsupportedModelError as exc:
            reason = str(exc)
    if proto is None:
        entry = {"supported": False, "reason": reason}
        manifest["stream"] = entry
        log(f"  stream: not supported ({reason})")
        return entry

    dims = proto.graph.input[0].type.tensor_type.shape.dim  # (batch, time, F): chunks have any length
    if dims[1].HasField("dim_value"):
        dims[1].Clear()
        dims[1].dim_param = "time"
    prep = preprocessing or {"type": "none"}
    proto = embed_preprocessing(proto, prep, masking=False)  # chunks are never padded
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
    keras_chunks = stream_check.KerasChunkRunner(model)
    if keras_proba_fn is None:
        keras_proba_fn = partial(keras_proba, model)
    runner = stream_check.onnx_chunk_runner(path, input_name, out_name, [(a, b) for a, b, _ in state_pairs])
    # Builds check Keras vs ONNX with their equivalence tolerance (verify.atol), like model.onnx;
    # the runtime-vs-runtime streaming identity (<= 1e-6) is a test of pipeline.runtime.stream.
    verification = stream_check.verify_stream(keras_chunks, runner, keras_proba_fn, F, T, seed, atol=atol,
                                              preprocessing=prep)
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
