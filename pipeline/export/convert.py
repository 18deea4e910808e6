"""Keras model -> the batch graph: the native GRU emitter, or tf2onnx's Loop graph as the fallback.

Owns: the ``backend`` choice (auto | native | tf2onnx): "try the fast path, fall back, or refuse when
forced", with the reason recorded. Layer: export. Imports: pipeline.export.native,
pipeline.export.tf2onnx_fallback (tf2onnx, lazily), pipeline.progress. Reads/writes: nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from pipeline import artifact, progress
from pipeline.export.native import UnsupportedModelError, export_native, output_name

__all__ = ["convert"]


def convert(model, backend: str, opset: int) -> tuple[Any, str, Optional[str]]:
    """Convert with ``backend`` (auto | native | tf2onnx): (ModelProto, backend used, fallback reason).

    ``auto`` tries the native GRU op and falls back to tf2onnx's Loop graph, recording why;
    ``native`` raises UnsupportedModelError instead of falling back.
    """
    reason = None
    if backend in ("auto", "native"):
        try:
            return export_native(model, artifact.INPUT_NAME, opset), "native", None
        except UnsupportedModelError as exc:
            if backend == "native":
                raise
            reason = str(exc)
            progress.log(f"  native GRU export not possible ({reason}); falling back to tf2onnx (Loop graph)")
    from pipeline.export.tf2onnx_fallback import export_tf2onnx

    name = output_name(int(model.outputs[0].shape[-1]))
    return export_tf2onnx(model, artifact.INPUT_NAME, name, opset), "tf2onnx", reason
