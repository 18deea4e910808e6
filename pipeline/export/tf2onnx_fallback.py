"""Generic ONNX export through tf2onnx (the fallback, and the reference "Loop" graph).

Owns: converting any Keras 3 model with ``tf2onnx.convert.from_function`` over a
``tf.function`` with an input signature (``from_keras`` fails on Keras 3, tf2onnx #2329), and
renaming the graph output to the stable name; every failure on the way (tf2onnx's own exceptions,
TensorFlow ops it cannot map, an ONNX ``ValidationError`` of the graph it returns, e.g. ``Erfc``, which
ONNX does not have) becomes one ``ExportError`` line, and tf2onnx's log lines are kept off stderr
(the unsupported ops they name go into that line). Imports: tensorflow, tf2onnx, onnx (build only).
Writes: nothing (returns a ModelProto).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.errors import ExportError

__all__ = ["export_tf2onnx"]


class _Unsupported(logging.Handler):
    """Collects tf2onnx's "Tensorflow op [...: Erfc] is not supported" records instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ops: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Tensorflow op [") and "is not supported" in msg:
            self.ops[msg.split("]")[0].rsplit(": ", 1)[-1]] += 1


def export_tf2onnx(model, input_name: str, output_name: str, opset: int) -> onnx.ModelProto:
    """Convert ``model`` with tf2onnx; graph input ``input_name``, output ``output_name`` (batch, k).

    Raises:
        ExportError: tf2onnx failed, left TensorFlow ops unmapped, or returned a graph the ONNX checker
            refuses at ``opset``; one line naming the ops.
    """
    logger = logging.getLogger("tf2onnx")
    handler = _Unsupported()
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = [handler]
    logger.propagate = False
    failure = None
    try:
        proto = _convert(model, input_name, output_name, opset)
    except ExportError as exc:
        failure = str(exc)
    except Exception as exc:  # tf2onnx and onnx raise many unrelated types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        failure = f"tf2onnx could not convert the model: {type(exc).__name__}: {detail}"
    finally:
        logger.handlers[:], logger.propagate = saved
    if handler.ops:  # the root cause of the invalid graph that usually follows
        ops = ", ".join(sorted(handler.ops))
        raise ExportError(f"tf2onnx could not convert the model: TensorFlow op(s) {ops} have no ONNX mapping at "
                          f"opset {opset}")
    if failure is not None:
        raise ExportError(failure)
    return proto


def _convert(model, input_name: str, output_name: str, opset: int) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    in_shape = list(model.inputs[0].shape)  # [None, T or None, F] or [None, T] (token ids)
    dtype = tf.int64 if len(in_shape) == 2 else tf.float32
    spec = (tf.TensorSpec(in_shape, dtype, name=input_name),)

    @tf.function(input_signature=spec)
    def serve(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    graph = proto.graph
    # Captured constants (e.g. a Normalization layer's mean and variance) may come back listed as
    # graph inputs too; they are initializers, so the graph keeps exactly one real input.
    # Captured eager tensors (e.g. an adapted Normalization's mean and variance) come back as graph
    # inputs; they are constants of the model, so they become initializers holding their values.
    captured = {}
    concrete = serve.get_concrete_function()
    for placeholder, value in zip(concrete.graph.internal_captures, concrete.captured_inputs):
        if value.dtype != tf.resource:
            captured[placeholder.name] = value.numpy()
    inits = {i.name for i in graph.initializer}
    real_inputs = []
    for vi in graph.input:
        if vi.name in captured and vi.name not in inits:
            graph.initializer.append(numpy_helper.from_array(np.asarray(captured[vi.name]), vi.name))
        elif vi.name not in inits:
            real_inputs.append(vi)
    del graph.input[:]
    graph.input.extend(real_inputs)
    if len(graph.output) != 1:
        raise ExportError(f"tf2onnx produced {len(graph.output)} outputs, expected 1")
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [output_name if o == old else o for o in node.output]
        node.input[:] = [output_name if i == old else i for i in node.input]
    graph.output[0].name = output_name
    if graph.input[0].name != input_name:
        raise ExportError(f"tf2onnx named the input {graph.input[0].name!r}, expected {input_name!r}")
    # Name the dynamic axes like the native graph does.
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    if len(dims) > 1 and not dims[1].HasField("dim_value"):
        dims[1].dim_param = "time"
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if out_dims:
        out_dims[0].dim_param = "batch"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"tf2onnx returned an invalid ONNX graph at opset {opset}: {first}") from None
    return proto
