"""The artifact's extra graphs: stream.onnx and model_unrolled.onnx, built, staged and entered in the manifest.

Owns: writing ``stream.onnx`` (built by pipeline.export.stream, checked chunk by chunk against Keras by
pipeline.verification.stream) and ``model_unrolled.onnx`` (built by pipeline.export.unrolled; checked
later, with every family, by pipeline.verification.unrolled), and their manifest entries.
Layer: packaging. Imports: pipeline.export, pipeline.verification, pipeline.keras_source.
Writes: ``<staging>/stream.onnx``, ``<staging>/model_unrolled.onnx``; fills ``manifest["stream"]`` and
``manifest["unrolled"]`` (the caller writes the manifest).

Manifest entry of a model that can stream::

    "stream": {"supported": true, "file": "stream.onnx", "sha256": ..., "input": "x",
               "output": "probability",
               "states": [{"input": "h_in_0", "output": "h_out_0", "shape": [D, H]}, ...],
               "verification": {"passed": true, "atol": 1e-5, "max_abs_error_proba": ...,
                                "max_abs_error_state": ..., "chunkings": ..., "sequences": ...}}

otherwise ``{"supported": false, "reason": "<why>"}``; the same for ``unrolled`` (see
pipeline.verification.unrolled for its verified form).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


from pipeline import artifact, progress
from pipeline.export.native import UnsupportedModelError
from pipeline.export.stream import stream_graph
from pipeline.export.unrolled import unroll_grus
from pipeline.keras_source.run import KerasChunkRunner
from pipeline.verification.stream import StreamPlan, onnx_chunk_runner, verify_stream

__all__ = ["stage_stream", "stage_unrolled", "STREAM_VERIFY_MAX_T"]

STREAM_VERIFY_MAX_T = 50  # the stream check's sequence length: the trained T, capped here (time per chunking)


def stage_stream(model, staging: Path, manifest: dict[str, Any], opset: int,
                 keras_fn: Callable, plan: StreamPlan) -> dict[str, Any]:
    """Write and verify ``stream.onnx`` when ``model`` can stream; record and return ``manifest["stream"]``.

    Args:
        model: the trained Keras classifier (p(class 1) as (batch, 1)).
        staging: folder that already holds model.onnx; stream.onnx is written beside it.
        manifest: the manifest being built (its ``input`` entry names and shapes the stream input).
        opset: ONNX opset of stream.onnx.
        keras_fn: (scaled (N, T, F), lengths) -> probabilities of the original model on whole sequences.
        plan: the check's sizes, seed, tolerance and the preprocessing stream.onnx embeds (T and F are
            taken from it).
    Raises:
        VerificationError: the streaming graph disagrees with Keras.
    """
    try:
        graph = stream_graph(model, manifest["input"], opset, plan.preprocessing or {"type": "none"})
    except UnsupportedModelError as exc:
        manifest["stream"] = {"supported": False, "reason": str(exc)}
        progress.log(f"  stream: not supported ({exc})")
        return manifest["stream"]
    path = Path(staging) / artifact.STREAM_MODEL_FILE
    path.write_bytes(graph.proto.SerializeToString())
    input_name = manifest["input"]["name"]
    runner = onnx_chunk_runner(path, input_name, graph.output, [(a, b) for a, b, _ in graph.states])
    # Builds check Keras vs ONNX with their equivalence tolerance (verify.atol), like model.onnx;
    # the runtime-vs-runtime streaming identity (<= 1e-6) is a test of pipeline.runtime.stream.
    verification = verify_stream(KerasChunkRunner(model), runner, keras_fn, plan)
    manifest["stream"] = {
        "supported": True, "file": artifact.STREAM_MODEL_FILE, "sha256": artifact.sha256_file(path),
        "input": input_name, "output": graph.output,
        "states": [{"input": a, "output": b, "shape": s} for a, b, s in graph.states],
        "verification": verification,
    }
    progress.log(f"  stream: {artifact.STREAM_MODEL_FILE} with {len(graph.states)} state(s), verified against Keras "
                 f"initial_state/return_state over {verification['chunkings']} chunkings "
                 f"(max |dp| {verification['max_abs_error_proba']:.2g}, "
                 f"max |dh| {verification['max_abs_error_state']:.2g})")
    return manifest["stream"]


def stage_unrolled(proto, staging: Path, manifest: dict[str, Any], timesteps: int, masking: bool,
                   raw_input: Callable[[Any], Any]) -> None:
    """Write the unrolled graph of ``proto`` (then ``raw_input`` of it) and a pending manifest entry, or record why not.

    The entry is completed (or the file dropped) by pipeline.verification.unrolled.verify_unrolled.
    """
    reason = None
    if masking:
        reason = "masked (variable-length) models run the native GRU op, which takes sequence lengths"
    elif not any(n.op_type == "GRU" for n in proto.graph.node):
        if "_unrolled_T" in proto.graph.name:  # pipeline.export.native wrote the GRUs step by step itself
            reason = ("model.onnx is itself the per-step graph (a GRU activation the ONNX GRU op does not have)")
        else:
            reason = "the exported graph has no native GRU op (tf2onnx backend)"
    else:
        try:
            unrolled = unroll_grus(proto, timesteps)
        except UnsupportedModelError as exc:
            reason = str(exc)
    if reason:
        manifest["unrolled"] = {"supported": False, "reason": reason}
        progress.log(f"  unrolled batch graph: not built ({reason})")
        return
    path = Path(staging) / artifact.UNROLLED_MODEL_FILE
    unrolled = raw_input(unrolled)
    path.write_bytes(unrolled.SerializeToString())
    manifest["unrolled"] = {"supported": True, "file": artifact.UNROLLED_MODEL_FILE,
                            "sha256": artifact.sha256_file(path), "timesteps": int(timesteps),
                            "nodes": len(unrolled.graph.node)}
