"""Keras model -> the batch graph: the native GRU emitter, or tf2onnx's Loop graph as the fallback.

Owns: the ``backend`` choice (auto | native | tf2onnx): "try the fast path, fall back, or refuse when
forced", with the reason recorded. A native refusal under ``backend="native"`` also says whether
``--backend tf2onnx`` converts the model (it is tried, not verified); a failed fallback under ``auto``
names both reasons, in one line. Layer: export. Imports: pipeline.export.native,
pipeline.export.tf2onnx_fallback (tf2onnx, lazily), pipeline.progress. Reads/writes: nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from pipeline import artifact, progress
from pipeline.errors import ExportError
from pipeline.export.native import UnsupportedModelError, export_native, output_name

__all__ = ["convert"]


def convert(model, backend: str, opset: int) -> tuple[Any, str, Optional[str]]:
    """Convert with ``backend`` (auto | native | tf2onnx): (ModelProto, backend used, fallback reason).

    ``auto`` tries the native GRU op and falls back to tf2onnx's Loop graph, recording why;
    ``native`` raises UnsupportedModelError instead of falling back, saying whether tf2onnx converts it.
    Raises:
        UnsupportedModelError: ``native`` and the native exporter cannot express the model.
        ExportError: the tf2onnx conversion failed (under ``auto``: after the native refusal, both named).
    """
    from pipeline.export.tf2onnx_fallback import export_tf2onnx

    name = output_name(int(model.outputs[0].shape[-1]))
    reason = None
    if backend in ("auto", "native"):
        try:
            return export_native(model, artifact.INPUT_NAME, opset), "native", None
        except UnsupportedModelError as exc:
            reason = str(exc)
            if backend == "native":
                try:
                    export_tf2onnx(model, artifact.INPUT_NAME, name, opset)
                except ExportError as tf_exc:
                    raise UnsupportedModelError(f"{reason}; --backend tf2onnx cannot convert it either ({tf_exc})") \
                        from None
                raise UnsupportedModelError(f"{reason}; --backend tf2onnx converts it (a Loop graph: no native GRU, "
                                            "no stream graph, no OpenVINO)") from None
            progress.log(f"  native GRU export not possible ({reason}); falling back to tf2onnx (Loop graph)")
    try:
        return export_tf2onnx(model, artifact.INPUT_NAME, name, opset), "tf2onnx", reason
    except ExportError as exc:
        if reason is None:
            raise
        raise ExportError(f"native export not possible ({reason}), and the tf2onnx fallback failed: {exc}") from None
