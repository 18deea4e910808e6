"""Raw features in: the feature scaling (and the padding rule) written into an ONNX graph.

Owns: ``embed_preprocessing``, the proto transform the exporter applies to every graph it ships
(model.onnx, stream.onnx, model_unrolled.onnx) so that each takes RAW features and no consumer
needs ``manifest.json`` to feed it. Imports: numpy, onnx (build stage only), pipeline.errors.
Reads/writes: nothing (ModelProto in, a new ModelProto out; the emitters are not changed).

What is prepended, for a graph input ``x`` (batch, time, F) float32 and a ``standardize`` entry::

    scaled = (x - mean) / std                         Sub, Div: the float32 operations of
                                                      pipeline.preprocessing.apply_preprocessing,
                                                      so the scaled values are bit-identical
    masked models (the Keras Masking layer sees the SCALED input and masks steps equal to its
    mask value): a step whose RAW features are all 0 is padding, whatever the scaling makes of it
    real   = ReduceMax(Cast(x != 0), axis=2)          (batch, time, 1)
    scaled = Where(real, scaled, mask_value)          padded steps become exactly the mask value

and every node that read ``x`` now reads ``scaled``. ``Where`` (not ``* mask``) keeps the padded
steps exactly equal to the mask value even when ``(0 - mean) / std`` is large. The input keeps
its name, type and shape. Nothing is folded into weights: folding ``/ std`` into the first
kernel would round differently from the Keras reference.

A graph whose input is integer token ids, or a ``none`` entry without masking (or with mask
value 0, where raw zeros already are the mask value) is returned unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.errors import ExportError

__all__ = ["embed_preprocessing", "SCALED_SUFFIX"]

SCALED_SUFFIX = "_scaled"  # the scaled input is named "<input><suffix>" inside the graph


def _opset(proto: onnx.ModelProto) -> int:
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise ExportError("the graph imports no default ONNX opset")


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
                        mask_value: Optional[float] = 0.0, input_name: Optional[str] = None) -> onnx.ModelProto:
    """A copy of ``proto`` whose input ``input_name`` takes raw features (see the module docstring).

    Args:
        proto: a graph with a float (batch, time, F) input (another input kind is returned as is).
        prep: the manifest preprocessing entry ({"type": "standardize", "mean", "std"} or "none").
        masking: the model masks padded steps; padded steps are the all-zero raw rows.
        mask_value: the Keras Masking layer's mask value (what padded steps must become).
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
    if tensor.elem_type != TensorProto.FLOAT:
        if kind != "none":
            raise ExportError(f"input {inp.name!r} is not float features, so it cannot be standardized")
        return out  # token ids: nothing to scale; Embedding(mask_zero) already masks id 0
    mv = float(mask_value or 0.0)
    pad = bool(masking) and (kind == "standardize" or mv != 0.0)
    if kind == "none" and not pad:
        return out
    dims = tensor.shape.dim
    F = int(dims[-1].dim_value) if len(dims) == 3 and dims[-1].HasField("dim_value") else None
    src = inp.name
    taken = _names(graph)
    scaled = _unique(taken, src + SCALED_SUFFIX)
    if _rename_consumers(graph, src, scaled) == 0:
        raise ExportError(f"embed_preprocessing: no node reads the input {src!r}")
    nodes = []

    def const(hint: str, value: np.ndarray) -> str:
        name = _unique(taken, f"{src}_{hint}")
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], hint: str, **attrs) -> str:
        name = scaled if hint == "final" else _unique(taken, f"{src}_{hint}")
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
        current = node("Div", [centred, const("std", std)], "final" if not pad else "standardized")
    if pad:
        nonzero = node("Not", [node("Equal", [src, const("zero", np.array(0.0, np.float32))], "is_zero")], "nonzero")
        nonzero_f = node("Cast", [nonzero], "nonzero_f", to=TensorProto.FLOAT)  # (B, T, F)
        if _opset(out) >= 18:
            any_f = node("ReduceMax", [nonzero_f, const("axis2", np.array([2], np.int64))], "real_f", keepdims=1)
        else:
            any_f = node("ReduceMax", [nonzero_f], "real_f", axes=[2], keepdims=1)  # (B, T, 1)
        real = node("Cast", [any_f], "real", to=TensorProto.BOOL)
        node("Where", [real, current, const("mask_value", np.array(mv, np.float32))], "final")
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)  # first: the rest of the graph keeps its (topological) order
    onnx.checker.check_model(out)
    return out
