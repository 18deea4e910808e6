"""Raw inputs in: the feature scaling, and for variable-length models the lengths, written into an ONNX graph.

Owns: ``embed_preprocessing``, the proto transform the packaging applies to every graph it ships
(model.onnx, stream.onnx, model_unrolled.onnx) so that each takes RAW features and no consumer
needs ``manifest.json`` to feed it. Layer: export. Imports: numpy, onnx (build stage only),
pipeline.errors. Reads/writes: nothing (ModelProto in, a new ModelProto out; the emitters are not changed).

What is prepended, for a graph input ``x`` (batch, time, F) float32 and a ``standardize`` entry::

    scaled = (x - mean) / std                         Sub, Div: the float32 operations of
                                                      pipeline.preprocessing.apply_preprocessing,
                                                      so the scaled values are bit-identical

and for a masked (variable-length) model a second graph input ``lengths`` int64 (batch,) decides
which steps are real (docs/artifact.md); the steps past each row's length become exactly the value
the model's own masking reads as padding (its Masking layer's mask value, or id 0 for an
``Embedding(mask_zero=True)``), so no value of the data means padding::

    real   = Range(0, time) < lengths[:, None]        (batch, time), then (batch, time, 1) for features
    scaled = Where(real, scaled, pad_value)           whatever the data holds past a row's length

Every node that read ``x`` now reads the result. The input keeps its name, type and shape. Nothing is
folded into weights: folding ``/ std`` into the first kernel would round differently from the Keras
reference. A fixed-length graph with a ``none`` entry is returned unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.errors import ExportError

__all__ = ["embed_preprocessing", "SCALED_SUFFIX", "LENGTHS_NAME"]

SCALED_SUFFIX = "_scaled"  # the scaled input is named "<input><suffix>" inside the graph
LENGTHS_NAME = "lengths"   # the second graph input of a variable-length model: int64 (batch,)


def _rename_consumers(graph: onnx.GraphProto, old: str, new: str) -> int:
    """Point every node input ``old`` (subgraphs included: Loop/Scan bodies read outer names) at ``new``."""
    count = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
                count += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _rename_consumers(attr.g, old, new)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                count += sum(_rename_consumers(g, old, new) for g in attr.graphs)
    return count


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every value and node name used in ``graph`` (new names must avoid them)."""
    taken = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    taken |= {v.name for v in graph.value_info}
    for node in graph.node:
        taken.update(node.output)
        taken.add(node.name)
    return taken


def _unique(taken: set[str], hint: str) -> str:
    name, k = hint, 0
    while name in taken:
        k += 1
        name = f"{hint}_{k}"
    taken.add(name)
    return name


def embed_preprocessing(proto: onnx.ModelProto, prep: dict[str, Any], masking: bool = False,
                        pad_value: float = 0.0, input_name: Optional[str] = None) -> onnx.ModelProto:
    """A copy of ``proto`` whose input ``input_name`` takes raw inputs (see the module docstring).

    Args:
        proto: a graph with a float (batch, time, F) or int64 token-id (batch, time) input.
        prep: the manifest preprocessing entry ({"type": "standardize", "mean", "std"} or "none").
        masking: the model masks padded steps: add the ``lengths`` input, and pad past each length.
        pad_value: what the model's masking reads as padding (the Masking layer's mask value; token
            inputs are padded with id 0).
        input_name: the input to transform (default: the graph's first input).
    Raises:
        ExportError: the entry is unknown or its length is not the graph's F.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    inp = next((i for i in graph.input if i.name == (input_name or graph.input[0].name)), None)
    if inp is None:
        raise ExportError(f"embed_preprocessing: the graph has no input {input_name!r}")
    kind = prep.get("type", "none")
    if kind not in ("none", "standardize"):
        raise ExportError(f"preprocessing type: expected 'standardize' or 'none', got {kind!r}")
    tensor = inp.type.tensor_type
    tokens = tensor.elem_type != TensorProto.FLOAT
    if tokens and kind != "none":
        raise ExportError(f"input {inp.name!r} is not float features, so it cannot be standardized")
    if kind == "none" and not masking:
        return out
    dims = tensor.shape.dim
    F = int(dims[-1].dim_value) if len(dims) == 3 and dims[-1].HasField("dim_value") else None
    src = inp.name
    taken = _names(graph)
    final = _unique(taken, src + SCALED_SUFFIX)
    if _rename_consumers(graph, src, final) == 0:
        raise ExportError(f"embed_preprocessing: no node reads the input {src!r}")
    nodes = []

    def const(hint: str, value: np.ndarray) -> str:
        name = _unique(taken, f"{src}_{hint}")
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], hint: str, **attrs) -> str:
        name = final if hint == "final" else _unique(taken, f"{src}_{hint}")
        nodes.append(helper.make_node(op, inputs, [name], name=_unique(taken, f"preprocessing_{op}"), **attrs))
        return name

    current = src
    if kind == "standardize":
        mean = np.asarray(prep["mean"], np.float32)
        std = np.asarray(prep["std"], np.float32)
        if F is not None and (mean.shape != (F,) or std.shape != (F,)):
            raise ExportError(f"preprocessing: expected {F} means and stds (the graph's F), got {mean.size} and {std.size}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ExportError("preprocessing: expected finite means and positive finite stds")
        centred = node("Sub", [src, const("mean", mean)], "centred")  # (B, T, F)
        current = node("Div", [centred, const("std", std)], "final" if not masking else "standardized")
    if masking:
        if LENGTHS_NAME in _names(graph):
            raise ExportError(f"embed_preprocessing: the graph already has a value named {LENGTHS_NAME!r}")
        graph.input.append(helper.make_tensor_value_info(LENGTHS_NAME, TensorProto.INT64, ["batch"]))
        T = node("Gather", [node("Shape", [src], "shape"), const("time_axis", np.array(1, np.int64))], "time", axis=0)
        steps = node("Range", [const("zero", np.array(0, np.int64)), T, const("one", np.array(1, np.int64))],
                     "steps")  # (time,)
        lengths_b1 = node("Unsqueeze", [LENGTHS_NAME, const("axis1", np.array([1], np.int64))], "lengths_b1")
        real = node("Less", [steps, lengths_b1], "real_bt")  # (B, T): steps before each row's length
        if not tokens:
            real = node("Unsqueeze", [real, const("axis2", np.array([2], np.int64))], "real")  # (B, T, 1)
        pad = np.array(0, np.int64) if tokens else np.array(pad_value, np.float32)
        node("Where", [real, current, const("pad_value", pad)], "final")
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)  # first: the rest of the graph keeps its (topological) order
    onnx.checker.check_model(out)
    return out
