"""The order in which a Keras model's layers are emitted: a chain, or a Functional graph with branches.

Owns: ``walk``, which feeds each layer the ``_Tensor`` its Keras input became and calls the emitter of its
class: layer by layer for a chain (Sequential, or each layer fed by the previous one), node by node in
Keras' own order for graphs with parallel branches, merges, several outputs or attention. Layer: export.
Imports: pipeline.export.base, pipeline.export.layers (merge emitters), pipeline.export.attention.
Reads: the model's layers and nodes. Writes: nothing (the emitters write into the graph builder).
"""

from __future__ import annotations

from typing import Callable

from pipeline.export.attention import ATTENTION_EMITTERS
from pipeline.export.base import UnknownLayerError, UnsupportedModelError, _Tensor
from pipeline.export.layers import MERGE_EMITTERS

__all__ = ["walk"]


def walk(e, model, t: _Tensor, emitters: dict[str, Callable]) -> _Tensor:
    """Emit every layer of ``model`` from the input tensor ``t``; returns the model output's tensor.

    ``emitters`` maps a Keras class name to ``fn(e, layer, tensor)`` (pipeline.export.native.LAYER_EMITTERS).
    Raises UnknownLayerError for a class with no emitter, UnsupportedModelError for calls it cannot express.
    """
    def emit_layer(layer, x: _Tensor):
        fn = emitters.get(type(layer).__name__)
        if fn is None:
            raise UnknownLayerError(layer)
        return fn(e, layer, x)

    if _is_chain(model):
        for layer in model.layers:
            if type(layer).__name__ != "InputLayer":
                t = emit_layer(layer, t)
        return t
    return _walk_graph(e, model, t, emit_layer)


def _is_chain(model) -> bool:
    """Each layer consumes the previous layer's output (a Sequential model is a chain by construction: a
    loaded one may hold several symbolic calls per layer, so node 0 of two neighbours need not be linked)."""
    if type(model).__name__ == "Sequential":
        return True
    prev_output = None
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if type(layer).__name__ in ATTENTION_EMITTERS or type(layer).__name__ in MERGE_EMITTERS:
            return False  # several inputs (query and value may be one tensor)
        if isinstance(layer.output, (list, tuple)):
            return False  # several outputs (return_state, Bidirectional merge_mode=None)
        consumed = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input
        if prev_output is not None and consumed is not prev_output:
            return False
        prev_output = layer.output
    return True


def _walk_graph(e, model, t: _Tensor, emit_layer: Callable) -> _Tensor:
    """A Functional model with branches (parallel branches, residual Add, several pooled views): its
    nodes in Keras' own order (deepest first), each emitted once from the tensors its inputs became."""
    for layer in model.layers:
        if type(layer).__name__ == "Masking" or getattr(layer, "mask_zero", False):
            raise UnsupportedModelError(f"layer {layer.name!r} ({type(layer).__name__}) masks a model with branches, "
                                        "merges or attention: masked sequences are supported in chains of layers only")
    values = {id(model.inputs[0]): t}
    by_depth = model._nodes_by_depth  # the order Functional.call runs them in
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            layer = node.operation
            if layer is None or node.is_input:
                continue
            if any(id(x) not in values for x in node.input_tensors):
                continue  # a node of another model using the same layer
            args, kwargs = node.arguments.fill_in(values)
            kind = type(layer).__name__
            if kind in ATTENTION_EMITTERS:  # several inputs and call options: the emitter checks them
                out = ATTENTION_EMITTERS[kind](e, layer, args, kwargs)
                for x in node.outputs:
                    values[id(x)] = out
                continue
            extra = [k for k, v in kwargs.items() if v is not None and k not in ("training", "mask")]
            if extra or (kwargs.get("mask") is not None):
                raise UnsupportedModelError(f"layer {layer.name!r} (class {kind}) is called with "
                                            f"{', '.join(extra or ['mask'])}: not supported")
            if kind in MERGE_EMITTERS:
                out = MERGE_EMITTERS[kind](e, layer, list(args[0]))
            elif len(args) != 1:
                raise UnsupportedModelError(f"layer {layer.name!r} (class {kind}) takes {len(args)} inputs")
            else:
                out = emit_layer(layer, args[0])
            outs = out if isinstance(out, list) else [out] * len(node.outputs)
            for x, y in zip(node.outputs, outs):
                values[id(x)] = y
    return values[id(model.outputs[0])]
