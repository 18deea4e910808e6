"""The streaming graph: ``stream.onnx``'s ModelProto, with explicit states.

Owns: building the stream graph of a Keras classifier and naming its state pairs. Verifying it and
writing it into an artifact is the packaging layer's (pipeline.packaging.stream_stage).
Layer: export. Imports: onnx (through pipeline.export.native), pipeline.export.scaling.
Reads/writes: nothing.

stream.onnx takes raw features like model.onnx (``pipeline.export.scaling`` puts the scaling in the
graph; a stream has no padding, so no padding rule) and carries its states as inputs and outputs: the
hidden state of each GRU layer (``h_in_i`` / ``h_out_i``, (1, batch, H)) and, for an average-pooling
head, the running mean and the step count (``avg_mean_in/out`` (1, batch, H), ``avg_count_in/out``
(1, batch, 1)). Its time axis is dynamic: chunks have any length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.export.native import UnsupportedModelError, export_native, stream_support
from pipeline.export.scaling import embed_preprocessing

__all__ = ["StreamGraph", "stream_graph"]


@dataclass
class StreamGraph:
    """stream.onnx as a ModelProto and its states: (input name, output name, [D, H]) per state."""

    proto: Any
    states: list[tuple[str, str, list[int]]]

    @property
    def output(self) -> str:
        return self.proto.graph.output[0].name


def stream_graph(model, input_spec: dict[str, Any], opset: int, preprocessing: dict[str, Any]) -> StreamGraph:
    """Build the stream graph of ``model`` taking raw features named ``input_spec["name"]``.

    Args:
        model: the Keras classifier the batch graph was exported from.
        input_spec: the manifest ``input`` entry (name, kind).
        opset: the ONNX opset.
        preprocessing: the manifest preprocessing entry, embedded like in model.onnx (never a padding rule).
    Raises:
        UnsupportedModelError: the model cannot stream; the message says why.
    """
    reason = stream_support(model)
    if reason is None and input_spec.get("kind", "features") != "features":
        reason = "only float feature inputs can be streamed"
    if reason is not None:
        raise UnsupportedModelError(reason)
    proto = export_native(model, input_spec["name"], opset, stateful=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim  # (batch, time, F): chunks have any length
    if dims[1].HasField("dim_value"):
        dims[1].Clear()
        dims[1].dim_param = "time"
    proto = embed_preprocessing(proto, preprocessing, masking=False)  # chunks are never padded
    states = []
    for vi in proto.graph.input[1:]:
        d = vi.type.tensor_type.shape.dim
        # h_in_i -> h_out_i (GRU states), avg_mean_in -> avg_mean_out, avg_count_in -> avg_count_out
        states.append((vi.name, vi.name.replace("_in", "_out", 1), [int(d[0].dim_value), int(d[2].dim_value)]))
    return StreamGraph(proto, states)
