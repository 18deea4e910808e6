"""Read the parts of a model.onnx the fused kernel needs, without the onnx package.

Owns: a minimal protobuf wire-format reader for the ONNX ``ModelProto`` fields used here (graph
nodes with their attributes, initializers, graph inputs and outputs), and ``match_fused``, which
recognises the one graph shape the fused kernel reproduces and returns its weights, or the reason
it does not apply.
Imports: numpy, struct (TF-free; never the onnx package). Reads: the bytes it is given (the caller
has already checked model.onnx against the manifest's sha256). Writes: nothing.

Why read model.onnx rather than a sidecar written by the exporter: the weights then come from the
very file the manifest's sha256 vouches for, every artifact already exported gets the fused path
with no re-export, and the export side is untouched. The graph shape recognised (anything else
keeps today's onnxruntime path, with the reason recorded):

    x -> [Sub|Div|Mul|Add by a per-feature constant]* -> Transpose(1,0,2)
      -> GRU -> SEQ(Y) -> GRU -> SEQ(Y) -> ... -> GRU      (one or more GRU layers, stacked)
      -> SEQ(Y) -> ReduceMean(axis 0)                      (average head)
       | LAST(Y_h)                                         (last state)
      -> Gemm(D*H -> 1) -> Sigmoid -> output     ([Identity]* allowed between any two of these)

    GRU:  forward, reverse or bidirectional, linear_before_reset 1 or 0 (Keras reset_after True or
          False), Sigmoid/Tanh, no sequence_lens, no initial_h, no clip; D = 2 directions when
          bidirectional, else 1
    SEQ(Y), Y (time, D, batch, H) -> (time, batch, D*H): Squeeze(Y, axis 1) for one direction,
          Concat(axis 2) of Squeeze(Split(Y, axis 1)[d], axis 1) for two, each optionally reversed
          in time by Slice(start -1, end INT64_MIN, axis 0, step -1)
    LAST(Y_h), Y_h (D, batch, H) -> (batch, D*H): Squeeze(Y_h, axis 0) for one direction, Concat(axis 1)
          of Squeeze(Split(Y_h, axis 0)[d], axis 0) for two

A reverse GRU is Keras' go_backwards: the exporter reverses its output sequence with the Slice, so a
stacked layer after it reads the outputs in processing order (a mean over time does not depend on
the order). A bidirectional GRU is Keras' Bidirectional with merge_mode="concat" (forward direction
first); other merges (sum, mul, ave) are not covered. Stacked layers are Keras GRU / Bidirectional
layers with return_sequences=True feeding the next (Dropout between them is no node).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["FusedSpec", "parse_model", "match_fused"]

_FLOAT, _INT64, _INT32, _DOUBLE = 1, 7, 6, 11
_NP = {_FLOAT: np.float32, _INT64: np.int64, _INT32: np.int32, _DOUBLE: np.float64}


class _Malformed(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint too long")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) of one message: int, or a memoryview for bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise _Malformed("truncated field")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise _Malformed(f"unsupported wire type {wt}")
        yield num, wt, val


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wt: int, val) -> list[int]:
    """A repeated int64 field entry: packed (wire type 2) or one varint."""
    if wt == 0:
        return [_signed(val)]
    out, pos = [], 0
    while pos < len(val):
        v, pos = _varint(val, pos)
        out.append(_signed(v))
    return out


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype, name, raw = 0, "", None
    floats: list[float] = []
    int64s: list[int] = []
    for num, wt, val in _fields(buf):
        if num == 1:
            dims += _ints(wt, val)
        elif num == 2:
            dtype = val
        elif num == 4:  # float_data: packed or single fixed32
            floats += list(np.frombuffer(bytes(val), "<f4")) if wt in (2, 5) else []
        elif num == 7:
            int64s += _ints(wt, val)
        elif num == 8:
            name = bytes(val).decode("utf-8")
        elif num == 9:
            raw = bytes(val)
        elif num in (13, 14):
            raise _Malformed(f"initializer {name or '?'} keeps its data outside the file")
    if dtype not in _NP:
        return name, np.empty(0)  # a type the kernel never needs
    if raw is not None:
        arr = np.frombuffer(raw, dtype=np.dtype(_NP[dtype]).newbyteorder("<")).astype(_NP[dtype])
    elif dtype == _FLOAT:
        arr = np.asarray(floats, np.float32)
    elif dtype == _INT64:
        arr = np.asarray(int64s, np.int64)
    else:
        arr = np.empty(0, _NP[dtype])
    if arr.size != int(np.prod(dims, dtype=np.int64)):
        raise _Malformed(f"initializer {name}: {arr.size} values for dims {dims}")
    return name, arr.reshape(dims)


def _attribute(buf: memoryview) -> tuple[str, Any]:
    name, value = "", None
    ints: list[int] = []
    floats: list[float] = []
    strings: list[str] = []
    for num, wt, val in _fields(buf):
        if num == 1:
            name = bytes(val).decode("utf-8")
        elif num == 2:
            value = struct.unpack("<f", bytes(val))[0]
        elif num == 3:
            value = _signed(val)
        elif num == 4:
            value = bytes(val).decode("utf-8", "replace")
        elif num == 5:
            value = _tensor(val)[1]
        elif num == 7:
            floats += list(np.frombuffer(bytes(val), "<f4")) if wt in (2, 5) else []
        elif num == 8:
            ints += _ints(wt, val)
        elif num == 9:
            strings.append(bytes(val).decode("utf-8", "replace"))
        elif num == 6:
            value = "<graph>"
    if value is None:
        value = ints or floats or strings or []
    return name, value


def _node(buf: memoryview) -> Node:
    node = Node("", [], [])
    for num, _, val in _fields(buf):
        if num == 1:
            node.inputs.append(bytes(val).decode("utf-8"))
        elif num == 2:
            node.outputs.append(bytes(val).decode("utf-8"))
        elif num == 4:
            node.op_type = bytes(val).decode("utf-8")
        elif num == 5:
            k, v = _attribute(val)
            node.attrs[k] = v
        elif num == 7 and bytes(val) not in (b"", b"ai.onnx"):
            node.op_type = bytes(val).decode("utf-8") + "::" + (node.op_type or "?")
    return node


def _value_info_name(buf: memoryview) -> str:
    for num, _, val in _fields(buf):
        if num == 1:
            return bytes(val).decode("utf-8")
    return ""


def parse_model(data: bytes) -> Graph:
    """The graph of serialized ``ModelProto`` bytes. Raises ValueError when they are not one."""
    graph_bytes = None
    for num, wt, val in _fields(memoryview(data)):
        if num == 7 and wt == 2:
            graph_bytes = val
    if graph_bytes is None:
        raise _Malformed("no graph in the model")
    nodes, inits, inputs, outputs = [], {}, [], []
    for num, wt, val in _fields(graph_bytes):
        if wt != 2:
            continue
        if num == 1:
            nodes.append(_node(val))
        elif num == 5:
            k, v = _tensor(val)
            inits[k] = v
        elif num == 11:
            inputs.append(_value_info_name(val))
        elif num == 12:
            outputs.append(_value_info_name(val))
    return Graph(nodes, inits, [i for i in inputs if i not in inits], outputs)


_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


@dataclass
class FusedLayer:
    """One GRU node: its weights as ONNX stores them, and how its output is handed on."""

    W: np.ndarray          # (D, 3H, F) float32, gates z, r, n
    R: np.ndarray          # (D, 3H, H)
    B: np.ndarray          # (D, 6H) [Wb, Rb]
    direction: str         # "forward" | "reverse" | "bidirectional" (direction 0 forward, 1 reverse)
    flip: tuple = ()       # per direction: its output sequence reaches the next layer (or the mean) reversed in time
    linear_before_reset: int = 1

    @property
    def hidden(self) -> int:
        return int(self.R.shape[2])

    @property
    def features(self) -> int:
        return int(self.W.shape[2])

    @property
    def directions(self) -> int:
        return int(self.W.shape[0])

    def reverse(self, d: int) -> bool:
        """Whether direction ``d`` runs from the last time step to the first."""
        return self.direction == "reverse" or (self.direction == "bidirectional" and d == 1)


@dataclass
class FusedSpec:
    """What the kernel needs to reproduce model.onnx: (N, T, F) model input -> (N,) p."""

    layers: list           # [FusedLayer], input side first
    head: str              # "avg" | "last"
    head_w: np.ndarray     # (D*H,) of the last layer, its directions concatenated
    head_b: float
    prefix: list = field(default_factory=list)  # [(op, (F,) float32 constant)] applied to x first, in order

    @property
    def features(self) -> int:
        return self.layers[0].features


def _axes(node: Node, init: dict) -> list[int]:
    """The axes of a Squeeze/Unsqueeze/ReduceMean/Concat/Split node: attribute or (opset >= 13/18) input."""
    if node.op_type in ("Concat", "Split"):
        return [int(node.attrs.get("axis", 0))]
    axes = list(node.attrs.get("axes", []))
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in np.asarray(init.get(node.inputs[1], np.empty(0))).reshape(-1)]
    return axes


class _Graph:
    """Lookups on the graph while match_fused walks it backwards from the output."""

    def __init__(self, graph: Graph) -> None:
        self.producer = {o: n for n in graph.nodes for o in n.outputs}
        self.init = graph.initializers

    def resolve(self, name: str) -> str:
        """``name``, or what a chain of Identity nodes producing it copies."""
        while (n := self.producer.get(name)) is not None and n.op_type == "Identity":
            name = n.inputs[0]
        return name

    def node(self, name: str) -> Optional[Node]:
        """The node producing ``name``, looking through Identity nodes."""
        return self.producer.get(self.resolve(name))

    def made_by(self, name: str, op: str) -> Optional[Node]:
        n = self.node(name)
        return n if n is not None and n.op_type == op else None

    def gru_output(self, name: str, index: int) -> Optional[Node]:
        """The GRU node whose output ``index`` (0: Y, 1: Y_h) is ``name``."""
        name = self.resolve(name)
        n = self.producer.get(name)
        return n if n is not None and n.op_type == "GRU" and n.outputs.index(name) == index else None

    def direction_part(self, name: str, index: int, split_axis: int) -> Optional[tuple[Node, int]]:
        """(GRU, direction d) when ``name`` is output ``index`` of a one-direction GRU, or output d
        of an equal two-way Split along ``split_axis`` of a bidirectional GRU's output ``index``."""
        gru = self.gru_output(name, index)
        if gru is not None:
            return (gru, 0) if gru.attrs.get("direction", "forward") in ("forward", "reverse") else None
        name = self.resolve(name)
        split = self.producer.get(name)
        if split is None or split.op_type != "Split" or len(split.outputs) != 2 or _axes(split, self.init) != [split_axis]:
            return None
        sizes = split.attrs.get("split") or (
            [int(v) for v in np.asarray(self.init.get(split.inputs[1], np.empty(0))).reshape(-1)]
            if len(split.inputs) > 1 and split.inputs[1] else [])
        if sizes not in ([], [1, 1]):
            return None
        gru = self.gru_output(split.inputs[0], index)
        if gru is None or gru.attrs.get("direction") != "bidirectional":
            return None
        return gru, split.outputs.index(name)

    def last_states(self, name: str) -> Optional[list[tuple[Node, int]]]:
        """[(GRU, direction)] when ``name`` (batch, D*H) is a GRU's last states, directions concatenated:
        Squeeze(Y_h, axis 0), or Concat(axis 1) of Squeeze(Split(Y_h, axis 0)[d], axis 0)."""
        cat = self.made_by(name, "Concat")
        if cat is not None:
            if _axes(cat, self.init)[0] not in (1, -1):
                return None
            parts = [self.last_states(i) for i in cat.inputs]
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        sq = self.made_by(name, "Squeeze")
        if sq is None or _axes(sq, self.init) != [0]:
            return None
        part = self.direction_part(sq.inputs[0], 1, 0)
        return None if part is None else [part]

    def sequence(self, name: str) -> Optional[list[tuple[Node, int, bool]]]:
        """[(GRU, direction, flipped)] when ``name`` (time, batch, D*H) is a GRU's output sequence,
        directions concatenated: Squeeze(Y, axis 1) or Squeeze(Split(Y, axis 1)[d], axis 1), reversed
        in time by a full Slice (start -1, step -1) or not, joined by Concat(axis 2)."""
        n = self.node(name)
        if n is None:
            return None
        if n.op_type == "Concat":
            if _axes(n, self.init)[0] not in (2, -1):
                return None
            parts = [self.sequence(i) for i in n.inputs]
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        if n.op_type == "Slice":
            consts = [np.asarray(self.init.get(i, np.empty(0))).reshape(-1).tolist() if i else None
                      for i in list(n.inputs[1:5]) + [""] * (5 - len(n.inputs))]
            starts, ends, axes, steps = consts
            if starts != [-1] or not ends or len(ends) != 1 or ends[0] > -(2 ** 31) or axes != [0] or steps != [-1]:
                return None
            inner = self.sequence(n.inputs[0])
            return None if inner is None else [(g, d, not f) for g, d, f in inner]
        if n.op_type == "Squeeze" and _axes(n, self.init) == [1]:
            part = self.direction_part(n.inputs[0], 0, 1)
            return None if part is None else [(part[0], part[1], False)]
        return None


def _one_gru(parts: list, what: str) -> tuple[Optional[Node], str]:
    """The GRU node when ``parts`` are all its directions in order, else (None, reason)."""
    gru = parts[0][0]
    D = _DIRECTIONS.get(gru.attrs.get("direction", "forward"), 0)
    if [p[:2] for p in parts] != [(gru, d) for d in range(D)]:
        return None, f"{what} is not every direction of one GRU, concatenated in order"
    return gru, ""


def _gru_layer(gru: Node, init: dict, flip: tuple) -> tuple[Optional[FusedLayer], str]:
    """The weights of one GRU node when its options are ones the kernel covers, else (None, reason)."""
    a = gru.attrs
    direction = a.get("direction", "forward")
    if direction not in _DIRECTIONS:
        return None, f"GRU direction {direction!r}"
    lbr = a.get("linear_before_reset", 0)
    if lbr not in (0, 1):
        return None, f"GRU linear_before_reset={lbr!r}"
    D = _DIRECTIONS[direction]
    acts = [s.lower() for s in a.get("activations", [])] or ["sigmoid", "tanh"] * D
    if acts != ["sigmoid", "tanh"] * D:
        return None, f"GRU activations {acts} (fused: sigmoid and tanh only)"
    for opt in ("clip", "activation_alpha", "activation_beta"):
        if opt in a and a[opt] not in ([], None):
            return None, f"GRU option {opt} is set"
    if a.get("layout", 0) != 0:
        return None, "GRU layout=1"
    ins = list(gru.inputs) + [""] * (6 - len(gru.inputs))
    if ins[4] or ins[5]:
        return None, "GRU with sequence_lens or initial_h (masked or stateful models keep the onnxruntime path)"
    W, R = init.get(ins[1]), init.get(ins[2])
    B = init.get(ins[3]) if ins[3] else None
    H = int(a.get("hidden_size", 0))
    if W is None or R is None or W.dtype != np.float32 or R.dtype != np.float32 or H < 1:
        return None, "GRU weights are not float32 constants"
    if W.ndim != 3 or W.shape[:2] != (D, 3 * H) or R.shape != (D, 3 * H, H):
        return None, f"GRU weight shapes W {W.shape}, R {R.shape} do not fit hidden_size {H} and {D} direction(s)"
    B = np.zeros((D, 6 * H), np.float32) if B is None else B
    if B.dtype != np.float32 or B.size != D * 6 * H:
        return None, f"GRU bias is not a float32 constant of {D} x 6H values"
    return FusedLayer(W=np.ascontiguousarray(W), R=np.ascontiguousarray(R), B=np.ascontiguousarray(B.reshape(D, 6 * H)),
                      direction=direction, flip=tuple(flip) or (False,) * D, linear_before_reset=int(lbr)), ""


def match_fused(graph: Graph, input_name: str, output_name: str) -> tuple[Optional[FusedSpec], str]:
    """(spec, "") when the graph is the shape the kernel covers, else (None, reason)."""
    g = _Graph(graph)
    init = g.init
    if graph.inputs != [input_name] or graph.outputs != [output_name]:
        return None, f"expected one input {input_name!r} and one output {output_name!r}"
    sig = g.made_by(output_name, "Sigmoid")
    if sig is None:
        return None, "the output is not a Sigmoid (only a Dense(1, sigmoid) head is fused)"
    gemm = g.made_by(sig.inputs[0], "Gemm")
    if gemm is None or len(gemm.inputs) < 2:
        return None, "the sigmoid is not fed by one Dense (Gemm) layer"
    if gemm.attrs.get("transA", 0) or gemm.attrs.get("alpha", 1.0) != 1.0 or gemm.attrs.get("beta", 1.0) != 1.0:
        return None, "the Dense layer's Gemm has transA/alpha/beta options"
    dW = init.get(gemm.inputs[1])
    db = init.get(gemm.inputs[2]) if len(gemm.inputs) > 2 and gemm.inputs[2] else np.zeros(1, np.float32)
    if dW is None or db is None or dW.dtype != np.float32 or db.dtype != np.float32 or db.size != 1:
        return None, "the Dense layer has no constant float32 weights with one output"
    dW = dW.T if gemm.attrs.get("transB", 0) else dW
    if dW.ndim != 2 or dW.shape[1] != 1:
        return None, f"the Dense layer has {dW.shape[-1]} outputs, expected 1"
    feat = gemm.inputs[0]
    mean = g.made_by(feat, "ReduceMean")
    if mean is not None:
        if _axes(mean, init) != [0] or mean.attrs.get("keepdims", 1) != 0:
            return None, "the pooling is not a mean over time (ReduceMean axes [0], keepdims 0)"
        head, parts = "avg", g.sequence(mean.inputs[0])
    else:
        head, parts = "last", g.last_states(feat)
    if not parts:
        pooled = g.node(mean.inputs[0] if mean is not None else feat)
        if pooled is not None and pooled.op_type in ("Add", "Mul"):
            return None, "a Bidirectional merge other than concat (fused: merge_mode='concat' only)"
        reason = "max pooling" if g.made_by(feat, "ReduceMax") else "not a GRU state or its mean over time"
        return None, f"the Dense layer's input is {reason} (fused: last state or average head)"
    gru, why = _one_gru(parts, "the Dense layer's input")
    if gru is None:
        return None, why
    layers: list[FusedLayer] = []
    # the last layer: an average head sums its output sequence in the order the graph pools it
    # (go_backwards: reversed by a Slice, i.e. in processing order); the last state has no order
    flip: tuple = tuple(f for _, _, f in parts) if head == "avg" else ()
    while True:
        layer, why = _gru_layer(gru, init, flip)
        if layer is None:
            return None, why
        if layers and layers[0].features != layer.directions * layer.hidden:
            return None, f"a GRU of {layers[0].features} inputs is fed {layer.directions * layer.hidden} values per step"
        layers.insert(0, layer)
        x = gru.inputs[0]
        tr = g.made_by(x, "Transpose")
        if tr is not None:
            break
        parts = g.sequence(x)
        if not parts:
            return None, ("the GRU input is neither the model input transposed to time-major nor the output "
                          "sequence of another GRU")
        gru, why = _one_gru(parts, "a GRU's input")
        if gru is None:
            return None, why
        flip = tuple(f for _, _, f in parts)
    if list(tr.attrs.get("perm", [])) != [1, 0, 2]:
        return None, "the GRU input is not the model input transposed to time-major"
    last = layers[-1]
    if dW.shape[0] != last.directions * last.hidden:
        return None, f"the Dense layer has {dW.shape[0]} inputs, the GRU gives {last.directions * last.hidden}"
    F = layers[0].features
    prefix, cur = [], tr.inputs[0]
    producer = g.producer
    while cur != input_name:
        n = producer.get(cur)
        if n is None or n.op_type not in ("Sub", "Div", "Mul", "Add") or len(n.inputs) != 2:
            return None, f"the model input reaches the GRU through {n.op_type if n else '?'} (fused: per-feature Sub/Div/Mul/Add only)"
        lhs, rhs = n.inputs
        if rhs in init and lhs not in init:
            const, cur = init[rhs], lhs
        elif lhs in init and n.op_type in ("Mul", "Add"):
            const, cur = init[lhs], rhs
        else:
            return None, f"{n.op_type} before the GRU is not x {n.op_type} a constant"
        if const.dtype != np.float32 or const.size not in (1, F) or (const.ndim > 1 and const.shape[-1] != const.size):
            return None, f"{n.op_type} before the GRU has a constant of shape {const.shape}, expected per-feature"
        prefix.insert(0, (n.op_type, np.broadcast_to(const.reshape(-1), (F,)).astype(np.float32)))
    return FusedSpec(layers=layers, head=head, head_w=np.ascontiguousarray(dW[:, 0]), head_b=float(db.reshape(-1)[0]),
                     prefix=prefix), ""
