"""ONNX graph builder shared by the emitters: native (``model.onnx``), stream (``stream.onnx``) and unrolled.

Owns: accumulating the nodes, initializers, graph inputs and graph outputs of a graph being
emitted, and handing out tensor names that are unique within it.
Imports: numpy, onnx. Reads/writes: nothing (the emitters turn the parts into a ModelProto).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """Nodes, initializers, inputs and outputs of one graph, with names unique within it.

    A generated name is ``{prefix}{hint}_{n}`` with a running counter ``n``, skipping any name in
    ``taken`` (the names already used by a graph being rewritten) or given to an input or output.
    ``name_nodes`` also names each node, from the same counter (``{op_type}_{n}`` unless a name is
    given); the unroller leaves its nodes unnamed.
    """

    def __init__(self, prefix: str = "", taken: Iterable[str] = (), name_nodes: bool = True) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._prefix = prefix
        self._taken = set(taken)
        self._name_nodes = name_nodes
        self._n = 0

    def name(self, hint: str) -> str:
        """A fresh name ``{prefix}{hint}_{n}``."""
        while True:
            self._n += 1
            candidate = f"{self._prefix}{hint}_{self._n}"
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate

    def const(self, hint: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer (its own dtype and shape); returns its name."""
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], node_name: Optional[str] = None,
             **attrs) -> None:
        """Append a node that writes the given output names (graph outputs, a rewritten node's outputs)."""
        if self._name_nodes and node_name is None:
            node_name = self.name(op_type)
        self.nodes.append(helper.make_node(op_type, inputs, outputs,
                                           name=node_name if self._name_nodes else None, **attrs))

    def op(self, op_type: str, inputs: list[str], hint: Optional[str] = None, n_out: int = 1, **attrs) -> list[str]:
        """Append a node with ``n_out`` fresh outputs named after ``hint`` (default: the op type); returns them."""
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.node(op_type, inputs, outs, **attrs)
        return outs

    def op1(self, op_type: str, inputs: list[str], hint: Optional[str] = None, **attrs) -> str:
        """``op`` with one output; returns its name."""
        return self.op(op_type, inputs, hint, 1, **attrs)[0]

    def add_input(self, name: str, elem_type: int, dims: list) -> str:
        """Declare a graph input ``name`` of ONNX element type ``elem_type`` and shape ``dims``."""
        self._taken.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, dims))
        return name

    def add_output(self, name: str, elem_type: int, dims: list) -> str:
        """Declare a graph output ``name`` of ONNX element type ``elem_type`` and shape ``dims``."""
        self._taken.add(name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, dims))
        return name

    def make_graph(self, graph_name: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.inits)
