"""What the native emitters share: the tensor flowing between layers and the refusal errors.

Owns: ``UnsupportedModelError`` / ``UnknownLayerError`` and ``_Tensor`` (name, layout, mask). Layer: export.
Imports: numpy, pipeline.errors. Reads/writes: nothing. Used by pipeline.export.native (GRU, masks, pooling,
the model walk) and pipeline.export.layers (the other layer kinds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipeline.errors import ExportError

__all__ = ["UnsupportedModelError", "UnknownLayerError", "_Tensor", "_int64"]


class UnsupportedModelError(ExportError):
    """The model contains something the native exporter cannot express exactly."""


class UnknownLayerError(UnsupportedModelError):
    """A Keras layer class the native exporter has no emitter for; names the layer and its class."""

    def __init__(self, layer) -> None:
        self.layer_name, self.layer_class = layer.name, type(layer).__name__
        super().__init__(f"layer {self.layer_name!r} (class {self.layer_class}) has no native ONNX mapping")


@dataclass
class _Tensor:
    """The value flowing between layers while the graph is emitted."""

    name: str
    layout: str                     # "btf" (batch, time, feat) | "tbf" (time, batch, feat) | "bf" | "bt" (ids)
    lengths: Optional[str] = None   # int32 (batch,) sequence lengths when a mask is active
    mask_tb1: Optional[str] = None  # float (time, batch, 1) 1.0 on real steps, when a mask is active


def _int64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


