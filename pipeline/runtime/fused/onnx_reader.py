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
      -> GRU(forward, linear_before_reset=1, Sigmoid/Tanh, no sequence_lens, no initial_h, no clip)
      -> Squeeze(Y, axis 1) -> ReduceMean(axis 0)   (average head)   | Squeeze(Y_h, axis 0)  (last state)
      -> Gemm(H -> 1) -> Sigmoid -> [Identity]* -> output
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


@dataclass
class FusedSpec:
    """What the kernel needs to reproduce model.onnx: (N, T, F) model input -> (N,) p."""

    W: np.ndarray          # (3H, F) float32, gates z, r, n
    R: np.ndarray          # (3H, H)
    B: np.ndarray          # (6H,) [Wb, Rb]
    head: str              # "avg" | "last"
    head_w: np.ndarray     # (H,)
    head_b: float
    prefix: list = field(default_factory=list)  # [(op, (F,) float32 constant)] applied to x first, in order

    @property
    def hidden(self) -> int:
        return int(self.R.shape[1])

    @property
    def features(self) -> int:
        return int(self.W.shape[1])


def match_fused(graph: Graph, input_name: str, output_name: str) -> tuple[Optional[FusedSpec], str]:
    """(spec, "") when the graph is the shape the kernel covers, else (None, reason)."""
    producer = {o: n for n in graph.nodes for o in n.outputs}
    init = graph.initializers

    def made_by(name: str, op: str) -> Optional[Node]:
        n = producer.get(name)
        return n if n is not None and n.op_type == op else None

    if graph.inputs != [input_name] or graph.outputs != [output_name]:
        return None, f"expected one input {input_name!r} and one output {output_name!r}"
    cur = output_name
    while (n := made_by(cur, "Identity")) is not None:
        cur = n.inputs[0]
    sig = made_by(cur, "Sigmoid")
    if sig is None:
        return None, "the output is not a Sigmoid (only a Dense(1, sigmoid) head is fused)"
    gemm = made_by(sig.inputs[0], "Gemm")
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
    mean, sq = made_by(feat, "ReduceMean"), None
    if mean is not None:
        axes = list(mean.attrs.get("axes", []))
        if len(mean.inputs) > 1 and mean.inputs[1]:
            axes = [int(a) for a in np.asarray(init.get(mean.inputs[1], np.empty(0))).reshape(-1)]
        if axes != [0] or mean.attrs.get("keepdims", 1) != 0:
            return None, "the pooling is not a mean over time (ReduceMean axes [0], keepdims 0)"
        head, sq, want_axis, want_out = "avg", made_by(mean.inputs[0], "Squeeze"), 1, 0
    else:
        head, sq, want_axis, want_out = "last", made_by(feat, "Squeeze"), 0, 1
    if sq is None:
        reason = "max pooling" if made_by(feat, "ReduceMax") else "not a GRU state or its mean over time"
        return None, f"the Dense layer's input is {reason} (fused: last state or average head)"
    axes = list(sq.attrs.get("axes", []))
    if len(sq.inputs) > 1 and sq.inputs[1]:
        axes = [int(a) for a in np.asarray(init.get(sq.inputs[1], np.empty(0))).reshape(-1)]
    if axes != [want_axis]:
        return None, f"unexpected Squeeze axes {axes} before the head"
    gru = made_by(sq.inputs[0], "GRU")
    if gru is None or gru.outputs.index(sq.inputs[0]) != want_out:
        return None, "the head is not fed by a GRU op (stacked layers, tf2onnx Loop graph or other layers)"
    a = gru.attrs
    if a.get("direction", "forward") != "forward":
        return None, f"GRU direction {a.get('direction')!r} (fused: forward only)"
    if a.get("linear_before_reset", 0) != 1:
        return None, "GRU reset_after=False (linear_before_reset=0; fused: reset_after=True only)"
    acts = [s.lower() for s in a.get("activations", [])] or ["sigmoid", "tanh"]
    if acts != ["sigmoid", "tanh"]:
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
    if W.ndim != 3 or W.shape[:2] != (1, 3 * H) or R.shape != (1, 3 * H, H) or dW.shape[0] != H:
        return None, f"GRU weight shapes W {W.shape}, R {R.shape}, Dense {dW.shape} do not fit hidden_size {H}"
    F = int(W.shape[2])
    B = np.zeros(6 * H, np.float32) if B is None else B
    if B.dtype != np.float32 or B.size != 6 * H:
        return None, "GRU bias is not a float32 constant of 6H values"
    tr = made_by(ins[0], "Transpose")
    if tr is None or list(tr.attrs.get("perm", [])) != [1, 0, 2]:
        return None, "the GRU input is not the model input transposed to time-major"
    prefix, cur = [], tr.inputs[0]
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
    return FusedSpec(W=np.ascontiguousarray(W[0]), R=np.ascontiguousarray(R[0]), B=np.ascontiguousarray(B.reshape(-1)),
                     head=head, head_w=np.ascontiguousarray(dW[:, 0]), head_b=float(db.reshape(-1)[0]),
                     prefix=prefix), ""
