"""Read the parts of a model.onnx the fused kernel needs, without the onnx package.

Owns: a minimal protobuf wire-format reader for the ONNX ``ModelProto`` fields used here (graph
nodes with their attributes, initializers, graph inputs and outputs, opset_import, metadata_props,
ir_version), and ``match_fused``, which recognises the one graph shape the fused kernel reproduces
and returns its weights, or the reason it does not apply. Every length, fixed-width field, wire type,
string and tensor size is checked: bytes the reader cannot read raise ``OnnxReadError`` (a
ValueError, one line naming the field and what was expected), never another exception, and
``match_fused`` returns a reason for any graph the reader returns (tests/runtime/test_onnx_reader.py
feeds it truncated and corrupted models; tests/export/test_onnx_reader_vs_onnx.py compares it with
onnx.load on every graph the tests export).
Imports: numpy, struct (TF-free; never the onnx package). Reads: the bytes it is given (the caller
has already checked model.onnx against the manifest's sha256). Writes: nothing.

Why read model.onnx rather than a sidecar written by the exporter: the weights then come from the
very file the manifest's sha256 vouches for, every artifact already exported gets the fused path
with no re-export, and the export side is untouched. The graph shape recognised (anything else
keeps today's onnxruntime path, with the reason recorded):

    x -> [Sub|Div|Mul|Add by a per-feature constant]* -> Transpose(1,0,2)
      (token models: ids x [-> Cast(int64)] -> Gather(Embedding table, axis 0) -> Transpose(1,0,2);
       with lengths, as below)
      -> GRU -> SEQ(Y) -> GRU -> SEQ(Y) -> ... -> GRU      (one or more GRU layers, stacked)
      -> SEQ(Y) -> ReduceMean(axis 0)                      (average head)
       | SEQ(Y) -> ReduceMax(axis 0)                       (max pooling head: exact in any order)
       | LAST(Y_h)                                         (last state)
      -> [Gemm(-> units) [-> Relu | Sigmoid | Tanh]]*         (Dense layers: linear, relu, sigmoid, tanh)
      -> Gemm(D*H or units -> k) -> Sigmoid | Softmax(axis -1) -> output
                                                 ([Identity]* allowed between any two of these)

    the head: Gemm to k >= 1 units (transA 0, alpha = beta = 1, constant float32 B and bias) then
          Sigmoid (binary when k = 1, multi-label when k > 1) or Softmax over the k units
          (multi-class; axis -1, or 1 as the Gemm output is 2-D)

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
first), or "sum", "mul", "ave": Add(a, b), Mul(a, b), Mul(Add(a, b), 0.5) of its two directions'
sequences (SEQ without the Concat) or last states (LAST without the Concat). Stacked layers are Keras GRU / Bidirectional
layers with return_sequences=True feeding the next (Dropout between them is no node).

A variable-length graph (``lengths_name``: gru-export's second input, pipeline/export/scaling.py) has
x -> [scaling] -> Where(real, x, pad) -> Transpose (or the Where ahead of the scaling), every GRU with sequence_lens (Keras' Masking), Keras'
last output carried over padded steps by a Where between layers (never read: the next GRU stops at the
length), and one of these heads over each row's own steps (pipeline/export/native.py):
    VALID(Y) -> ...                  the last states, read from Y at the row's end: Unsqueeze(GatherND(
                                     Transpose(Gather(Y, d, axis 1)), sequence_lens - 1)) for a forward
                                     direction, Unsqueeze(Gather(Gather(Y, d, axis 1), 0)) for a reverse
                                     one; Concat(axis 0) -> Split -> Squeeze for two, as LAST
    Div(ReduceSum(Mul(SEQ(Y) | Where(real, SEQ(Y), last), mask), axis 0), ReduceSum(mask, axis 0))
    ReduceMax(SEQ(Y) | Where(real, SEQ(Y), last), axis 0)   over the whole padded sequence: Y's zeros past
                                     each length, or Keras' last output carried there (``max_reads_zeros``)
each with the Bidirectional merges as above. A token model with lengths (Embedding mask_zero) reads
ids -> Where(Range(0, time) < lengths[:, None], ids, 0) -> Cast(int64) -> Gather(table), and its sequence_lens
and masks are the nonzero ids, not the lengths input: every GRU's sequence_lens must be Cast(ReduceSum(
Cast(Not(Equal(ids, 0)), float), axis 1), int32) and every mask the head reads (the mean's, the carrying
Where's condition) that same nonzero mask, time-major; they equal the lengths and the first steps of each row
while no real step holds id 0, and the kernel refuses a batch where one does (gru_run_ids_lens).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["OnnxReadError", "Graph", "Node", "FusedSpec", "FusedLayer", "parse_model", "match_fused"]

_FLOAT, _INT32, _INT64, _DOUBLE = 1, 6, 7, 11
_BOOL = 9  # TensorProto.BOOL: a Cast to it (the Where carrying Keras' last output past each length)
_NP = {_FLOAT: np.float32, _INT64: np.int64, _INT32: np.int32, _DOUBLE: np.float64}  # the types read; others: empty
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # protobuf wire types (3, 4: groups, never in ONNX)
_MAX_FIELD = (1 << 29) - 1
_EXTERNAL = 1  # TensorProto.DataLocation EXTERNAL
# AttributeProto.type: FLOAT, INT, STRING, TENSOR, GRAPH -> the field holding it, and its default
_ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 4, 6, 7, 8
_ATTR_FIELD = {1: 2, 2: 3, 3: 4, 4: 5, 5: 6}
_ATTR_DEFAULT = {1: 0.0, 2: 0, 3: "", 5: "<graph>"}  # TENSOR's default, an empty tensor, is read as one


class OnnxReadError(ValueError):
    """The bytes are not a ModelProto this reader can read: truncated or malformed protobuf, a field
    of the wrong type, tensor data that does not fit its dims, or data kept outside the file."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``: at most 10 bytes, at most 64 bits."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxReadError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >> 64:
                raise OnnxReadError(f"varint over 64 bits ending at byte {pos}")
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxReadError(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) of one message: an int for a varint, a memoryview of
    the bytes for the others (8 for fixed64, 4 for fixed32), every length checked against the message."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if not 1 <= num <= _MAX_FIELD:
            raise OnnxReadError(f"field number {num} at byte {start} (expected 1..{_MAX_FIELD})")
        if wt == _VARINT:
            val, pos = _varint(buf, pos)
        elif wt in (_FIXED64, _FIXED32, _BYTES):
            if wt == _BYTES:
                n, pos = _varint(buf, pos)
            else:
                n = 8 if wt == _FIXED64 else 4
            if n > end - pos:
                raise OnnxReadError(f"field {num} at byte {start} needs {n} bytes, {end - pos} left")
            val, pos = buf[pos:pos + n], pos + n
        else:
            raise OnnxReadError(f"field {num} at byte {start} has wire type {wt} (expected 0, 1, 2 or 5)")
        yield num, wt, val


def _expect(num: int, wt: int, want: int, what: str) -> None:
    if wt != want:
        raise OnnxReadError(f"{what} (field {num}) has wire type {wt}, expected {want}")


def _text(num: int, wt: int, val, what: str, errors: str = "strict") -> str:
    """A string field (UTF-8)."""
    _expect(num, wt, _BYTES, what)
    try:
        return bytes(val).decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise OnnxReadError(f"{what} (field {num}) is not UTF-8: {exc.reason} at byte {exc.start}") from None


def _message(num: int, wt: int, val, what: str) -> memoryview:
    """An embedded message field: its bytes."""
    _expect(num, wt, _BYTES, what)
    return val


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int32(v: int) -> int:
    """A varint read as protobuf reads an int32 field: its low 32 bits, signed."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _scalar(num: int, wt: int, val, what: str) -> int:
    """An int64 field (one varint)."""
    _expect(num, wt, _VARINT, what)
    return _int64(val)


def _varints(num: int, wt: int, val, what: str) -> list[int]:
    """A repeated integer field entry: packed (wire type 2) or one varint; unsigned 64-bit values."""
    if wt == _VARINT:
        return [val]
    _expect(num, wt, _BYTES, what)
    out, pos = [], 0
    while pos < len(val):
        v, pos = _varint(val, pos)
        out.append(v)
    return out


def _fixed(num: int, wt: int, val, what: str, dtype: str) -> np.ndarray:
    """A repeated float or double field entry: packed (wire type 2) or one fixed32 / fixed64."""
    size = np.dtype(dtype).itemsize
    if wt != _BYTES:
        _expect(num, wt, _FIXED32 if size == 4 else _FIXED64, what)
    if len(val) % size:
        raise OnnxReadError(f"{what} (field {num}): {len(val)} bytes, not a multiple of {size}")
    return np.frombuffer(bytes(val), dtype)


@dataclass
class Node:
    op_type: str           # "domain::op_type" outside the default domain
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """What parse_model reads of a ModelProto (everything else is skipped, its framing checked)."""

    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]      # graph inputs that are not initializers
    outputs: list[str]
    opset_import: list[tuple[str, int]] = field(default_factory=list)    # (domain, version)
    metadata_props: list[tuple[str, str]] = field(default_factory=list)  # (key, value)
    ir_version: int = 0


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """(name, array) of a TensorProto: float, int32, int64 or double data, raw or typed; another
    type gives an empty array (the kernel never needs one)."""
    dims: list[int] = []
    dtype, name, raw, location = 0, "", None, 0
    typed: list = []  # the typed data fields' entries, in order
    for num, wt, val in _fields(buf):
        if num == 1:
            dims += [_int64(v) for v in _varints(num, wt, val, "tensor dims")]
        elif num == 2:
            _expect(num, wt, _VARINT, "tensor data_type")
            dtype = _int32(val)
        elif num == 4:
            typed.append(("float", _fixed(num, wt, val, "tensor float_data", "<f4")))
        elif num == 5:
            typed.append(("int32", [_int32(v) for v in _varints(num, wt, val, "tensor int32_data")]))
        elif num == 7:
            typed.append(("int64", [_int64(v) for v in _varints(num, wt, val, "tensor int64_data")]))
        elif num == 8:
            name = _text(num, wt, val, "tensor name")
        elif num == 9:
            _expect(num, wt, _BYTES, "tensor raw_data")
            raw = bytes(val)
        elif num == 10:
            typed.append(("double", _fixed(num, wt, val, "tensor double_data", "<f8")))
        elif num == 13:
            raise OnnxReadError(f"initializer {name or '?'} keeps its data outside the file (external_data)")
        elif num == 14:
            _expect(num, wt, _VARINT, "tensor data_location")
            location = _int32(val)
    if location == _EXTERNAL:
        raise OnnxReadError(f"initializer {name or '?'} keeps its data outside the file (data_location EXTERNAL)")
    if any(d < 0 for d in dims):
        raise OnnxReadError(f"initializer {name or '?'}: negative dims {dims}")
    if dtype not in _NP:
        return name, np.empty(0)
    np_type = np.dtype(_NP[dtype])
    if raw is not None:
        if len(raw) % np_type.itemsize:
            raise OnnxReadError(f"initializer {name or '?'}: {len(raw)} raw bytes, not a multiple of {np_type.itemsize}")
        arr = np.frombuffer(raw, dtype=np_type.newbyteorder("<")).astype(np_type)
    else:
        field_of = {_FLOAT: "float", _INT32: "int32", _INT64: "int64", _DOUBLE: "double"}[dtype]
        values = [v for kind, vs in typed if kind == field_of for v in vs]
        arr = np.asarray(values, np_type) if values else np.empty(0, np_type)
    count = 1
    for d in dims:
        count *= d
    if arr.size != count:
        raise OnnxReadError(f"initializer {name or '?'}: {arr.size} values for dims {dims}")
    return name, arr.reshape(dims)


def _attribute(buf: memoryview) -> tuple[str, Any]:
    """(name, value) of an AttributeProto: a float, int, string, array (tensor), "<graph>", or a list
    of floats, ints or strings. The value is the field its ``type`` names (that field's default when
    it is missing), as onnx.helper.get_attribute_value reads it; without a known type, the first of
    t, g, s, i, f that is present, else its ints, floats or strings (possibly none: [])."""
    name, kind = "", 0
    single: dict[int, Any] = {}     # field number -> value of f (2), i (3), s (4), g (6)
    tensor_parts: list[bytes] = []  # t (5): a singular message given twice is merged (its bytes joined)
    ints: list[int] = []
    floats: list[float] = []
    strings: list[str] = []
    for num, wt, val in _fields(buf):
        if num == 1:
            name = _text(num, wt, val, "attribute name")
        elif num == 2:
            _expect(num, wt, _FIXED32, f"attribute {name!r} f")
            single[2] = struct.unpack("<f", val)[0]
        elif num == 3:
            single[3] = _scalar(num, wt, val, f"attribute {name!r} i")
        elif num == 4:
            single[4] = _text(num, wt, val, f"attribute {name!r} s", "replace")
        elif num == 5:
            tensor_parts.append(bytes(_message(num, wt, val, f"attribute {name!r} t")))
        elif num == 6:
            _message(num, wt, val, f"attribute {name!r} g")
            single[6] = "<graph>"
        elif num == 7:
            floats += [float(v) for v in _fixed(num, wt, val, f"attribute {name!r} floats", "<f4")]
        elif num == 8:
            ints += [_int64(v) for v in _varints(num, wt, val, f"attribute {name!r} ints")]
        elif num == 9:
            strings.append(_text(num, wt, val, f"attribute {name!r} strings", "replace"))
        elif num == 20:
            _expect(num, wt, _VARINT, f"attribute {name!r} type")
            kind = _int32(val)
    if tensor_parts or kind == _ATTR_TENSOR:
        single[5] = _tensor(memoryview(b"".join(tensor_parts)))[1]
    lists = {_ATTR_FLOATS: floats, _ATTR_INTS: ints, _ATTR_STRINGS: strings}
    if kind in lists:
        return name, lists[kind]
    if kind in _ATTR_FIELD:
        return name, single.get(_ATTR_FIELD[kind], _ATTR_DEFAULT.get(kind))  # (TENSOR: always set above)
    for num in (5, 6, 4, 3, 2):
        if num in single:
            return name, single[num]
    return name, ints or floats or strings or []


def _node(buf: memoryview) -> Node:
    node, domain = Node("", [], []), ""
    for num, wt, val in _fields(buf):
        if num == 1:
            node.inputs.append(_text(num, wt, val, "node input"))
        elif num == 2:
            node.outputs.append(_text(num, wt, val, "node output"))
        elif num == 4:
            node.op_type = _text(num, wt, val, "node op_type")
        elif num == 5:
            k, v = _attribute(_message(num, wt, val, "node attribute"))
            node.attrs[k] = v
        elif num == 7:
            domain = _text(num, wt, val, "node domain")
    if domain not in ("", "ai.onnx"):
        node.op_type = f"{domain}::{node.op_type or '?'}"
    return node


def _value_info_name(buf: memoryview) -> str:
    name = ""
    for num, wt, val in _fields(buf):
        if num == 1:
            name = _text(num, wt, val, "value_info name")
    return name


def _pair(buf: memoryview, what: str, second_is_int: bool) -> tuple:
    """(domain, version) of an OperatorSetIdProto or (key, value) of a StringStringEntryProto."""
    first, second = "", 0 if second_is_int else ""
    for num, wt, val in _fields(buf):
        if num == 1:
            first = _text(num, wt, val, f"{what} {'domain' if second_is_int else 'key'}")
        elif num == 2:
            second = (_scalar(num, wt, val, f"{what} version") if second_is_int
                      else _text(num, wt, val, f"{what} value"))
    return first, second


def parse_model(data: bytes) -> Graph:
    """The graph of serialized ``ModelProto`` bytes. Raises OnnxReadError (a ValueError) when they
    are not one this reader can read."""
    graph_parts: list[bytes] = []  # the graph field given twice is merged, as protobuf merges it
    opsets, metadata, ir_version = [], [], 0
    for num, wt, val in _fields(memoryview(data)):
        if num == 1:
            ir_version = _scalar(num, wt, val, "model ir_version")
        elif num == 7:
            graph_parts.append(bytes(_message(num, wt, val, "model graph")))
        elif num == 8:
            opsets.append(_pair(_message(num, wt, val, "model opset_import"), "opset_import", True))
        elif num == 14:
            metadata.append(_pair(_message(num, wt, val, "model metadata_props"), "metadata_props", False))
    if not graph_parts:
        raise OnnxReadError("no graph in the model")
    nodes, inits, inputs, outputs = [], {}, [], []
    for num, wt, val in _fields(memoryview(b"".join(graph_parts))):
        if num == 1:
            nodes.append(_node(_message(num, wt, val, "graph node")))
        elif num == 5:
            k, v = _tensor(_message(num, wt, val, "graph initializer"))
            inits[k] = v
        elif num == 11:
            inputs.append(_value_info_name(_message(num, wt, val, "graph input")))
        elif num == 12:
            outputs.append(_value_info_name(_message(num, wt, val, "graph output")))
    return Graph(nodes, inits, [i for i in inputs if i not in inits], outputs, opsets, metadata, ir_version)


_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_MAX_NESTING = 64  # Concat/Slice nodes nested between two GRUs (exports have at most 2; a cycle has no end)


@dataclass
class FusedLayer:
    """One GRU node: its weights as ONNX stores them, and how its output is handed on."""

    W: np.ndarray          # (D, 3H, F) float32, gates z, r, n
    R: np.ndarray          # (D, 3H, H)
    B: np.ndarray          # (D, 6H) [Wb, Rb]
    direction: str         # "forward" | "reverse" | "bidirectional" (direction 0 forward, 1 reverse)
    flip: tuple = ()       # per direction: its output sequence reaches the next layer (or the mean) reversed in time
    linear_before_reset: int = 1
    merge: str = "concat"  # bidirectional: "concat" (2H values per step) or "sum" | "mul" | "ave" (H values)

    @property
    def width(self) -> int:
        """Values per step this layer hands on: D*H, or H for a merge other than concat."""
        return self.hidden if self.merge != "concat" else self.directions * self.hidden

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
    """What the kernel needs to reproduce model.onnx: (N, T, F) model input -> (N,) p (binary) or
    (N, k) probabilities."""

    layers: list           # [FusedLayer], input side first
    head: str              # "avg" | "max" | "last"
    head_w: np.ndarray     # (D*H, k) of the last layer (its directions concatenated) x outputs; (D*H,) = k 1
    head_b: Any            # (k,) float32; a float when k is 1
    prefix: list = field(default_factory=list)  # [(op, (F,) float32 constant)] applied to x first, in order
    activation: str = "sigmoid"  # "sigmoid" (each of the k outputs) | "softmax" (over the k outputs)
    # Dense layers between the pooling and the head's Gemm, input side first: [(W (inputs, units) float32,
    # b (units,) float32, "linear" | "relu" | "sigmoid" | "tanh")]; head_w then has the last one's units as rows
    dense: list = field(default_factory=list)
    # a token model: the Embedding table (vocab, F) float32 whose rows the (N, T) int64 ids select (Gather)
    embedding: Optional[np.ndarray] = None
    lengths: bool = False  # a variable-length graph: (N,) lengths in, each row real for its first lengths[i] steps
    # variable length, max head: the graph's ReduceMax reads the GRU's zeros past each row's length (False: Keras'
    # last real output is carried there by a Where, so only the real steps count)
    max_reads_zeros: bool = False

    def __post_init__(self) -> None:
        w = np.asarray(self.head_w, np.float32)
        self.head_w = np.ascontiguousarray(w.reshape(w.shape[0], -1))  # (D*H, k)
        self.head_b = np.ascontiguousarray(np.asarray(self.head_b, np.float32).reshape(-1))  # (k,)
        if self.head_b.shape != (self.head_w.shape[1],) or self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"head: weights {self.head_w.shape}, bias {self.head_b.shape}, {self.activation!r}")

    @property
    def features(self) -> int:
        return self.layers[0].features

    @property
    def outputs(self) -> int:
        """k: the head's output units."""
        return int(self.head_w.shape[1])

    @property
    def binary(self) -> bool:
        """One sigmoid output, p(class 1): the kernel returns (N,) rather than (N, 1)."""
        return self.outputs == 1 and self.activation == "sigmoid"


def _attr(node: Node, name: str, default, kind: type):
    """``node``'s attribute ``name`` when it holds a ``kind`` (int, float, str or list), ``default``
    when the node has no such attribute, None when it holds something else."""
    value = node.attrs.get(name, default)
    return value if type(value) is kind else None


def _input(node: Node, i: int) -> str:
    """The name of ``node``'s input ``i``; "" when it has fewer inputs (ONNX's "not given")."""
    return node.inputs[i] if i < len(node.inputs) else ""


def _ints(init: dict, name: str) -> Optional[list[int]]:
    """The values of an integer initializer; [] when ``name`` is not given; None when it is not an
    integer constant."""
    if not name:
        return []
    arr = init.get(name)
    if arr is None or arr.dtype.kind not in "iu":
        return None
    return [int(v) for v in arr.reshape(-1)]


def _axes(node: Node, init: dict) -> Optional[list[int]]:
    """The axes of a Squeeze/Unsqueeze/ReduceMean/Concat/Split node: attribute or (opset >= 13/18)
    input; None when they are not integers."""
    if node.op_type in ("Concat", "Split"):
        axis = _attr(node, "axis", 0, int)
        return None if axis is None else [axis]
    if _input(node, 1):
        return _ints(init, _input(node, 1))
    axes = _attr(node, "axes", [], list)
    return axes if axes is not None and all(type(a) is int for a in axes) else None


class _Graph:
    """Lookups on the graph while match_fused walks it backwards from the output."""

    def __init__(self, graph: Graph) -> None:
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.init = graph.initializers
        self.depth = 0  # nested Concat/Slice walks: a cycle in the graph must not recurse forever

    def resolve(self, name: str) -> str:
        """``name``, or what a chain of Identity nodes producing it copies (a cycle of Identity nodes
        resolves to one of its names, whose producer is then an Identity: no match)."""
        for _ in range(len(self.producer) + 1):
            n = self.producer.get(name)
            if n is None or n.op_type != "Identity" or not _input(n, 0):
                break
            name = _input(n, 0)
        return name

    def nested(self) -> bool:
        """Whether one more nested Concat/Slice fits (_MAX_NESTING: far more than any export nests)."""
        return self.depth < _MAX_NESTING

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
            return (gru, 0) if _attr(gru, "direction", "forward", str) in ("forward", "reverse") else None
        name = self.resolve(name)
        split = self.producer.get(name)
        if split is None or split.op_type != "Split" or len(split.outputs) != 2 or _axes(split, self.init) != [split_axis]:
            return None
        sizes = _attr(split, "split", [], list)
        if sizes == []:
            sizes = _ints(self.init, _input(split, 1))
        if sizes not in ([], [1, 1]):
            return None
        gru = self.gru_output(_input(split, 0), index)
        if gru is None or _attr(gru, "direction", "forward", str) != "bidirectional":
            return None
        return gru, split.outputs.index(name)

    def last_states(self, name: str) -> Optional[list[tuple[Node, int]]]:
        """[(GRU, direction)] when ``name`` (batch, D*H) is a GRU's last states, directions concatenated:
        Squeeze(Y_h, axis 0), or Concat(axis 1) of Squeeze(Split(Y_h, axis 0)[d], axis 0)."""
        cat = self.made_by(name, "Concat")
        if cat is not None:
            if _axes(cat, self.init) not in ([1], [-1]) or not self.nested():
                return None
            self.depth += 1
            parts = [self.last_states(i) for i in cat.inputs]
            self.depth -= 1
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        sq = self.made_by(name, "Squeeze")
        if sq is None or _axes(sq, self.init) != [0]:
            return None
        part = self.direction_part(_input(sq, 0), 1, 0)
        return None if part is None else [part]

    def valid_last(self, name: str) -> Optional[list[tuple[Node, int]]]:
        """[(GRU, direction)] when ``name`` (batch, D*H) is a variable-length graph's last states, directions
        concatenated: Squeeze(axis 0) of one direction's state (``_valid_state``), or of Split(Concat(the two
        directions' states, axis 0), axis 0)[d], joined by Concat(axis 1) (pipeline/export/native.py,
        ``_last_valid_states``: the graph never reads the GRU's own Y_h when sequence_lens is set)."""
        cat = self.made_by(name, "Concat")
        if cat is not None:
            if _axes(cat, self.init) not in ([1], [-1]) or not self.nested():
                return None
            self.depth += 1
            parts = [self.valid_last(i) for i in cat.inputs]
            self.depth -= 1
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        sq = self.made_by(name, "Squeeze")
        if sq is None or _axes(sq, self.init) != [0]:
            return None
        state = self.resolve(_input(sq, 0))
        split = self.producer.get(state)
        if split is not None and split.op_type == "Split":  # a bidirectional GRU's states, (2, batch, H), split
            sizes = _attr(split, "split", [], list)
            if sizes == []:
                sizes = _ints(self.init, _input(split, 1))
            both = self.made_by(_input(split, 0), "Concat")
            if (len(split.outputs) != 2 or _axes(split, self.init) != [0] or sizes not in ([], [1, 1]) or both is None
                    or _axes(both, self.init) != [0] or len(both.inputs) != 2):
                return None
            d = split.outputs.index(state)
            part = self._valid_state(both.inputs[d])
            return [part] if part is not None and part[1] == d else None
        part = self._valid_state(state)
        return [part] if part is not None else None

    def _valid_state(self, name: str) -> Optional[tuple[Node, int]]:
        """(GRU, direction d) when ``name`` (1, batch, H) is Unsqueeze(axis 0) of direction d's state at each
        row's own end, read from Y: GatherND(Transpose(Gather(Y, d, axis 1), (1, 0, 2)), Unsqueeze(Cast(Sub(
        sequence_lens, 1)), axis 1), batch_dims 1) for a forward direction (step sequence_lens - 1), Gather(
        Gather(Y, d, axis 1), 0, axis 0) for a reverse one (step 0)."""
        unsq = self.made_by(name, "Unsqueeze")
        if unsq is None or _axes(unsq, self.init) != [0]:
            return None
        nd = self.made_by(_input(unsq, 0), "GatherND")
        if nd is not None:
            tr = self.made_by(_input(nd, 0), "Transpose")
            if _attr(nd, "batch_dims", 0, int) != 1 or tr is None or _attr(tr, "perm", [], list) != [1, 0, 2]:
                return None
            y_d, forward = _input(tr, 0), True
        else:
            first = self.made_by(_input(unsq, 0), "Gather")
            if (first is None or _attr(first, "axis", 0, int) != 0 or _ints(self.init, _input(first, 1)) != [0]
                    or self.init[_input(first, 1)].ndim != 0):
                return None
            y_d, forward = _input(first, 0), False
        pick = self.made_by(y_d, "Gather")
        d = _ints(self.init, _input(pick, 1)) if pick is not None and _attr(pick, "axis", 0, int) == 1 else None
        gru = self.gru_output(_input(pick, 0), 0) if d is not None and len(d) == 1 else None
        if gru is None or self.init[_input(pick, 1)].ndim != 0:
            return None
        direction, d = _attr(gru, "direction", "forward", str), d[0]
        if direction not in _DIRECTIONS or not 0 <= d < _DIRECTIONS[direction]:
            return None
        if forward != (direction == "forward" or (direction == "bidirectional" and d == 0)):
            return None  # a forward direction's state at the row's end, a reverse one's at step 0
        if forward:  # the row's end: its sequence_lens - 1
            ends = self.made_by(_input(nd, 1), "Unsqueeze")
            cast = self.made_by(_input(ends, 0), "Cast") if ends is not None and _axes(ends, self.init) == [1] else None
            sub = self.made_by(_input(cast, 0), "Sub") if cast is not None and _attr(cast, "to", 0, int) == _INT64 \
                else None
            if sub is None or _ints(self.init, _input(sub, 1)) != [1] or not _input(gru, 4) \
                    or self.resolve(_input(sub, 0)) != self.resolve(_input(gru, 4)):
                return None
        return gru, d

    def merged(self, name: str, kind: str) -> tuple[Optional[list], str]:
        """(parts, merge) when ``name`` is a Bidirectional merge of a GRU's two directions (kind "sequence":
        their output sequences, unreversed; "last": their last states; "valid_last": a variable-length graph's
        last states, ``valid_last``): Add(a, b) ("sum"), Mul(a, b)
        ("mul") or Mul(Add(a, b), 0.5) ("ave"), a the forward direction and b the reverse one; else
        (None, "concat")."""
        n = self.node(name)
        if n is None or n.op_type not in ("Add", "Mul") or len(n.inputs) != 2:
            return None, "concat"
        merge = "sum" if n.op_type == "Add" else "mul"
        consts = [i for i in n.inputs if i in self.init]
        if n.op_type == "Mul" and len(consts) == 1:  # ave: (a + b) * 0.5
            c = self.init[consts[0]]
            inner = self.made_by(n.inputs[1 - n.inputs.index(consts[0])], "Add")
            if c.dtype != np.float32 or c.size != 1 or float(c.reshape(-1)[0]) != 0.5 or inner is None:
                return None, "concat"
            n, merge = inner, "ave"
        if len(n.inputs) != 2 or any(i in self.init for i in n.inputs):
            return None, "concat"
        get = {"sequence": self.sequence, "last": self.last_states, "valid_last": self.valid_last}[kind]
        a, b = get(n.inputs[0]), get(n.inputs[1])
        if not a or not b or len(a) != 1 or len(b) != 1 or [p[1] for p in a + b] != [0, 1] or a[0][0] is not b[0][0]:
            return None, "concat"
        if kind == "sequence" and (a[0][2] or b[0][2]):  # reversed in time by a Slice: not what Keras merges
            return None, "concat"
        return a + b, merge

    def sequence(self, name: str) -> Optional[list[tuple[Node, int, bool]]]:
        """[(GRU, direction, flipped)] when ``name`` (time, batch, D*H) is a GRU's output sequence,
        directions concatenated: Squeeze(Y, axis 1) or Squeeze(Split(Y, axis 1)[d], axis 1), reversed
        in time by a full Slice (start -1, step -1) or not, joined by Concat(axis 2)."""
        n = self.node(name)
        if n is None:
            return None
        if n.op_type in ("Concat", "Slice") and not self.nested():
            return None
        if n.op_type == "Concat":
            if _axes(n, self.init) not in ([2], [-1]):
                return None
            self.depth += 1
            parts = [self.sequence(i) for i in n.inputs]
            self.depth -= 1
            return None if any(p is None for p in parts) else [x for p in parts for x in p]
        if n.op_type == "Slice":
            starts, ends, axes, steps = (_ints(self.init, _input(n, i)) for i in range(1, 5))
            if starts != [-1] or not ends or len(ends) != 1 or ends[0] > -(2 ** 31) or axes != [0] or steps != [-1]:
                return None
            self.depth += 1
            inner = self.sequence(_input(n, 0))
            self.depth -= 1
            return None if inner is None else [(g, d, not f) for g, d, f in inner]
        if n.op_type == "Squeeze" and _axes(n, self.init) == [1]:
            part = self.direction_part(_input(n, 0), 0, 1)
            return None if part is None else [(part[0], part[1], False)]
        return None


def _one_gru(parts: list, what: str) -> tuple[Optional[Node], str]:
    """The GRU node when ``parts`` are all its directions in order, else (None, reason)."""
    gru = parts[0][0]
    D = _DIRECTIONS.get(_attr(gru, "direction", "forward", str), 0)
    if [p[:2] for p in parts] != [(gru, d) for d in range(D)]:
        return None, f"{what} is not every direction of one GRU, concatenated in order"
    return gru, ""


def _gru_layer(gru: Node, init: dict, flip: tuple, lengths: bool = False) -> tuple[Optional[FusedLayer], str]:
    """The weights of one GRU node when its options are ones the kernel covers, else (None, reason)."""
    direction = _attr(gru, "direction", "forward", str)
    if direction not in _DIRECTIONS:
        return None, f"GRU direction {gru.attrs.get('direction')!r}"
    lbr = _attr(gru, "linear_before_reset", 0, int)
    if lbr not in (0, 1):
        return None, f"GRU linear_before_reset={gru.attrs.get('linear_before_reset')!r}"
    D = _DIRECTIONS[direction]
    acts = _attr(gru, "activations", [], list)
    if acts is None or not all(type(s) is str for s in acts):
        return None, f"GRU activations {gru.attrs.get('activations')!r} are not names"
    acts = [s.lower() for s in acts] or ["sigmoid", "tanh"] * D
    if acts != ["sigmoid", "tanh"] * D:
        return None, f"GRU activations {acts} (fused: sigmoid and tanh only)"
    for opt in ("clip", "activation_alpha", "activation_beta"):
        if opt in gru.attrs and not (type(gru.attrs[opt]) is list and not gru.attrs[opt]):
            return None, f"GRU option {opt} is set"
    if _attr(gru, "layout", 0, int) != 0:
        return None, "GRU layout=1"
    ins = [_input(gru, i) for i in range(6)]
    if (ins[4] and not lengths) or ins[5]:
        return None, "GRU with sequence_lens or initial_h (masked or stateful models keep the onnxruntime path)"
    W, R = init.get(ins[1]), init.get(ins[2])
    B = init.get(ins[3]) if ins[3] else None
    H = _attr(gru, "hidden_size", 0, int)
    if W is None or R is None or W.dtype != np.float32 or R.dtype != np.float32 or H is None or H < 1:
        return None, "GRU weights are not float32 constants"
    if W.ndim != 3 or W.shape[:2] != (D, 3 * H) or R.shape != (D, 3 * H, H):
        return None, f"GRU weight shapes W {W.shape}, R {R.shape} do not fit hidden_size {H} and {D} direction(s)"
    B = np.zeros((D, 6 * H), np.float32) if B is None else B
    if B.dtype != np.float32 or B.size != D * 6 * H:
        return None, f"GRU bias is not a float32 constant of {D} x 6H values"
    return FusedLayer(W=np.ascontiguousarray(W), R=np.ascontiguousarray(R), B=np.ascontiguousarray(B.reshape(D, 6 * H)),
                      direction=direction, flip=tuple(flip) or (False,) * D, linear_before_reset=int(lbr)), ""


_MAX_DENSE = 8  # the C MAX_DENSE


def _gemm_weights(gemm: Node, init: dict) -> tuple[Optional[np.ndarray], Optional[np.ndarray], str]:
    """(W (inputs, units), b (units,), "") of a Dense layer's Gemm (transA 0, alpha = beta = 1, constant
    float32 weights and bias, or no bias), else (None, None, reason)."""
    transB = _attr(gemm, "transB", 0, int)
    if (len(gemm.inputs) < 2 or _attr(gemm, "transA", 0, int) != 0 or _attr(gemm, "alpha", 1.0, float) != 1.0
            or _attr(gemm, "beta", 1.0, float) != 1.0 or transB not in (0, 1)):
        return None, None, "its Gemm has transA/alpha/beta options"
    W = init.get(gemm.inputs[1])
    if W is None or W.dtype != np.float32 or W.ndim != 2 or min(W.shape) < 1:
        return None, None, "it has no constant float32 (inputs, units) weights"
    W = np.ascontiguousarray(W.T if transB else W)  # (inputs, units)
    U = W.shape[1]
    b = init.get(gemm.inputs[2]) if len(gemm.inputs) > 2 and gemm.inputs[2] else np.zeros(U, np.float32)
    if b is None or b.dtype != np.float32 or b.size not in (1, U) or (b.ndim > 1 and b.shape[-1] != b.size):
        return None, None, f"its bias is not a float32 constant of 1 or {U} values"
    return W, np.broadcast_to(b.reshape(-1), (U,)).astype(np.float32), ""


def _masked_mean(g: "_Graph", name: str) -> Optional[tuple[str, list[str]]]:
    """(seq, masks) when ``name`` is the mean of the (time, batch, H) sequence seq over each row's real steps, in a
    variable-length graph: Div(ReduceSum(Mul(seq | Where(real, seq, last), mask), axis 0), ReduceSum(mask, axis 0));
    masks: the (time, batch, 1) mask, and the Where's condition when there is one."""
    div = g.made_by(name, "Div")
    num = g.made_by(_input(div, 0), "ReduceSum") if div is not None else None
    den = g.made_by(_input(div, 1), "ReduceSum") if div is not None else None
    if num is None or den is None or _axes(num, g.init) != [0] or _axes(den, g.init) != [0] \
            or _attr(num, "keepdims", 1, int) != 0:
        return None
    mul = g.made_by(_input(num, 0), "Mul")
    if mul is None or g.resolve(_input(mul, 1)) != g.resolve(_input(den, 0)):
        return None
    seq = _input(mul, 0)
    where = g.made_by(seq, "Where")  # Keras' last output carried over padded steps: masked out next
    if where is None:
        return seq, [_input(mul, 1)]
    return _input(where, 1), [_input(mul, 1), _input(where, 0)]


def _steps_before_lengths(g: "_Graph", name: str, input_name: str, lengths_name: str) -> bool:
    """Whether ``name`` (batch, time) is Less(Range(0, Gather(Shape(x), 1), 1), Unsqueeze(lengths, axis 1)): the
    steps before each row's length (pipeline/export/scaling.py)."""
    less = g.made_by(name, "Less")
    steps = g.made_by(_input(less, 0), "Range") if less is not None else None
    lens_b1 = g.made_by(_input(less, 1), "Unsqueeze") if less is not None else None
    if (steps is None or lens_b1 is None or _axes(lens_b1, g.init) != [1]
            or g.resolve(_input(lens_b1, 0)) != lengths_name
            or _ints(g.init, _input(steps, 0)) != [0] or _ints(g.init, _input(steps, 2)) != [1]):
        return False
    time = g.made_by(_input(steps, 1), "Gather")
    shape = g.made_by(_input(time, 0), "Shape") if time is not None else None
    return (shape is not None and not shape.attrs and g.resolve(_input(shape, 0)) == input_name
            and _attr(time, "axis", 0, int) == 0 and _ints(g.init, _input(time, 1)) == [1])


def _keras_mask(g: "_Graph", name: str) -> tuple[str, str]:
    """(x, value) when the (batch, time) float mask ``name`` is Keras' mask of x against value
    (pipeline/export/native.py), else ("", ""): Cast(Not(Equal(ids, value)), float) for token ids (Embedding
    mask_zero), Cast(Cast(ReduceMax(Cast(Not(Equal(x, value)), float), axis 2), bool), float) for features
    (Masking: a step is real when any of its values differs)."""
    cast = g.made_by(name, "Cast")
    if cast is None or _attr(cast, "to", 0, int) != _FLOAT:
        return "", ""
    src = _input(cast, 0)
    any_b = g.made_by(src, "Cast")
    if any_b is not None:  # features: any value of the step differs
        any_f = g.made_by(_input(any_b, 0), "ReduceMax") if _attr(any_b, "to", 0, int) == _BOOL else None
        neq_f = g.made_by(_input(any_f, 0), "Cast") if any_f is not None and _axes(any_f, g.init) in ([2], [-1]) \
            and _attr(any_f, "keepdims", 1, int) == 0 else None
        if neq_f is None or _attr(neq_f, "to", 0, int) != _FLOAT:
            return "", ""
        src = _input(neq_f, 0)
    nz = g.made_by(src, "Not")
    eq = g.made_by(_input(nz, 0), "Equal") if nz is not None else None
    if eq is None or len(eq.inputs) != 2:
        return "", ""
    return g.resolve(eq.inputs[0]), eq.inputs[1]


def _lengths_not_from(g: "_Graph", seq_lens: list, masks: list, source) -> str:
    """"" when every GRU's sequence_lens counts, and every (time, batch, 1) mask the head reads marks, the steps
    of Keras' mask ``source(x, value)`` accepts (``_keras_mask``), else which of the two does not."""
    for kind, names, unwrap in (("a GRU's sequence_lens", seq_lens, _counted_mask),
                                ("the pooling's mask", masks, _batch_major_mask)):
        if any(not source(*_keras_mask(g, unwrap(g, n))) for n in names):
            return kind
    return ""


def _counted_mask(g: "_Graph", name: str) -> str:
    """The (batch, time) mask whose count per row ``name`` is: Cast(ReduceSum(mask, axis 1), to int32) (a GRU's
    sequence_lens), else ""."""
    cast = g.made_by(name, "Cast")
    total = g.made_by(_input(cast, 0), "ReduceSum") if cast is not None and _attr(cast, "to", 0, int) == _INT32 \
        else None
    if total is None or _axes(total, g.init) != [1] or _attr(total, "keepdims", 1, int) != 0:
        return ""
    return _input(total, 0)


def _batch_major_mask(g: "_Graph", name: str) -> str:
    """The (batch, time) mask whose (time, batch, 1) form ``name`` is: Unsqueeze(Transpose(mask, (1, 0)), axis 2),
    or that cast to bool (a Where's condition), else ""."""
    cast = g.made_by(name, "Cast")
    if cast is not None:
        if _attr(cast, "to", 0, int) != _BOOL:
            return ""
        name = _input(cast, 0)
    unsq = g.made_by(name, "Unsqueeze")
    tr = g.made_by(_input(unsq, 0), "Transpose") if unsq is not None and _axes(unsq, g.init) == [2] else None
    return _input(tr, 0) if tr is not None and _attr(tr, "perm", [], list) == [1, 0] else ""


def _token_lengths(g: "_Graph", ids: str, read: set, input_name: str, lengths_name: str, seq_lens: list,
                   masks: list) -> str:
    """"" when a variable-length token graph runs each row over its lengths: the ids ``ids`` are Where(steps before
    lengths, x, 0) (pipeline/export/scaling.py), and every GRU's sequence_lens counts, and every mask the head
    reads marks, the nonzero ids among ``read`` (those ids, or their Cast; Embedding mask_zero,
    pipeline/export/native.py). The count is then each row's length and the mask its first steps while no id 0
    lies before the length, which gru_run_ids_lens refuses. Else the reason."""
    where = g.made_by(ids, "Where")
    if (where is None or _ints(g.init, _input(where, 2)) != [0] or g.resolve(_input(where, 1)) != input_name
            or not _steps_before_lengths(g, _input(where, 0), input_name, lengths_name)):
        return "the ids are not the model input with id 0 past each row's length (Where(steps < lengths, x, 0))"
    kind = _lengths_not_from(g, seq_lens, masks, lambda x, value: x in read and _ints(g.init, value) == [0])
    return f"{kind} is not each row's nonzero ids (Embedding mask_zero)" if kind else ""


def _float_lengths(g: "_Graph", where: Node, input_name: str, lengths_name: str, seq_lens: list,
                   masks: list) -> str:
    """"" when a variable-length float graph runs each row over its lengths: the padded input ``where`` is
    Where(steps before lengths, x, pad) (pipeline/export/scaling.py), and every GRU's sequence_lens counts, and
    every mask the head reads marks, the steps of that padded input not all equal to the pad value (Keras'
    Masking on it). The count is then each row's length while no real step is all mask value, which the
    Predictor refuses (``refuse_masked_real_steps``). Else the reason: e.g. a Masking after a Normalization,
    whose mask is on the normalized values, counts the padded steps as real."""
    real = g.made_by(_input(where, 0), "Unsqueeze")  # (batch, time, 1) from the (batch, time) steps
    if real is None or _axes(real, g.init) != [2] or not _steps_before_lengths(g, _input(real, 0), input_name,
                                                                               lengths_name):
        return "the Where padding the input is not the steps before each row's length"
    padded, pad = g.resolve(where.outputs[0]), g.init[_input(where, 2)].reshape(-1)
    kind = _lengths_not_from(g, seq_lens, masks, lambda x, value: x == padded and value in g.init
                             and np.array_equal(g.init[value].reshape(-1), pad))
    return f"{kind} is not each row's steps of the padded input (Keras' Masking on the raw input)" if kind else ""


def match_fused(graph: Graph, input_name: str, output_name: str,
                lengths_name: Optional[str] = None) -> tuple[Optional[FusedSpec], str]:
    """(spec, "") when the graph is the shape the kernel covers, else (None, reason). ``lengths_name``: the
    graph's second input of a variable-length model (the spec then has ``lengths``: GRU layers with
    sequence_lens, the input padded past the lengths by a Where, and a head over each row's own steps: the
    states at its end (``_Graph.valid_last``), the mean over its real steps (``_masked_mean``), or the max
    over the padded sequence, ``max_reads_zeros`` unless Keras' last output is carried past the length)."""
    g = _Graph(graph)
    init = g.init
    if graph.inputs != [input_name] + ([lengths_name] if lengths_name else []) or graph.outputs != [output_name]:
        return None, (f"expected the input {input_name!r}{f' and {lengths_name!r}' if lengths_name else ''} and one "
                      f"output {output_name!r}")
    act = g.node(output_name)
    if act is None or act.op_type not in ("Sigmoid", "Softmax"):
        return None, ("the output is not a Sigmoid or Softmax (fused: Dense(k) heads with sigmoid, or softmax "
                      "over the k units)")
    activation = act.op_type.lower()
    if activation == "softmax" and _attr(act, "axis", -1, int) not in (-1, 1):  # the Gemm output is 2-D
        return None, f"the Softmax is over axis {act.attrs.get('axis')!r} (fused: the last axis, the k units)"
    gemm = g.made_by(_input(act, 0), "Gemm")
    if gemm is None or len(gemm.inputs) < 2:
        return None, f"the {act.op_type} is not fed by one Dense (Gemm) layer"
    transB = _attr(gemm, "transB", 0, int)
    if (_attr(gemm, "transA", 0, int) != 0 or _attr(gemm, "alpha", 1.0, float) != 1.0
            or _attr(gemm, "beta", 1.0, float) != 1.0 or transB not in (0, 1)):
        return None, "the Dense layer's Gemm has transA/alpha/beta options"
    dW = init.get(gemm.inputs[1])
    if dW is None or dW.dtype != np.float32 or dW.ndim != 2:
        return None, "the Dense layer has no constant float32 (inputs, units) weights"
    dW = dW.T if transB else dW  # (inputs, k)
    k = dW.shape[1]
    db = init.get(gemm.inputs[2]) if len(gemm.inputs) > 2 and gemm.inputs[2] else np.zeros(k, np.float32)
    if db is None or db.dtype != np.float32 or db.size not in (1, k) or (db.ndim > 1 and db.shape[-1] != db.size):
        return None, f"the Dense layer's bias is not a float32 constant of 1 or {k} values (one per unit)"
    if k < 1:
        return None, "the Dense layer has no output units"
    feat, dense = gemm.inputs[0], []
    for _ in range(len(graph.nodes) + 1):  # Dense layers between the pooling and the head, output side first
        act_node = g.node(feat)
        act_name = ({"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}.get(act_node.op_type)
                    if act_node is not None else None)
        hidden = g.made_by(_input(act_node, 0), "Gemm") if act_name else g.made_by(feat, "Gemm")
        if hidden is None:
            if act_node is not None and act_node.op_type in ("Softmax", "LeakyRelu", "Elu", "HardSigmoid"):
                return None, (f"a Dense layer with activation {act_node.op_type} between the pooling and the "
                              "classifier (fused: linear, relu, sigmoid, tanh)")
            break
        W_h, b_h, why = _gemm_weights(hidden, init)
        if W_h is None:
            return None, f"a Dense layer between the pooling and the classifier: {why}"
        if len(dense) == _MAX_DENSE:
            return None, f"more than {_MAX_DENSE} Dense layers between the pooling and the classifier"
        dense.insert(0, (W_h, b_h, act_name or "linear"))
        feat = hidden.inputs[0]
    else:
        return None, "the Dense layers feed each other in a cycle"
    for (W_a, _, _), (W_b, _, _) in zip(dense, dense[1:] + [(dW, None, None)]):
        if W_a.shape[1] != W_b.shape[0]:
            return None, f"a Dense layer of {W_b.shape[0]} inputs is fed {W_a.shape[1]} values"
    mean = g.made_by(feat, "ReduceMean") or g.made_by(feat, "ReduceMax")
    carry = None  # variable length, max head: the Where that carries Keras' last output past each length
    masks: list[str] = []  # variable length: the (time, batch, 1) masks the head reads (a Where's condition too)
    if lengths_name:
        pooled = g.made_by(feat, "ReduceMax")
        if pooled is not None:  # over the whole padded sequence (Keras' GlobalMaxPooling1D ignores the mask)
            if _axes(pooled, init) != [0] or _attr(pooled, "keepdims", 1, int) != 0:
                return None, "the pooling is not a max over time (ReduceMax axes [0], keepdims 0)"
            head, src = "max", _input(pooled, 0)
            carry = g.made_by(src, "Where")
            src, masks = (_input(carry, 1), [_input(carry, 0)]) if carry is not None else (src, [])
        else:
            masked = _masked_mean(g, feat)
            head = "avg" if masked is not None else "last"
            src, masks = masked if masked is not None else (feat, [])
        parts, merge = (g.valid_last(src) if head == "last" else g.sequence(src)), "concat"
        if not parts:
            parts, merge = g.merged(src, "valid_last" if head == "last" else "sequence")
        if not parts:
            return None, ("variable length: the Dense layer's input is not a GRU's state at each row's own end, nor its "
                          "mean over each row's real steps or max over time (fused: last state, average or max pooling)")
        if carry is not None and not (len(parts) == 1 and _attr(parts[0][0], "direction", "forward", str) == "forward"
                                        and not parts[0][2] and g.valid_last(_input(carry, 2)) == [p[:2] for p in parts]
                                        and merge == "concat"):
            return None, ("variable length: the max pools a Where that is not a forward GRU's output with its last "
                          "state carried past each length")
    elif mean is not None:
        pool = "mean" if mean.op_type == "ReduceMean" else "max"
        if _axes(mean, init) != [0] or _attr(mean, "keepdims", 1, int) != 0:
            return None, f"the pooling is not a {pool} over time ({mean.op_type} axes [0], keepdims 0)"
        head, src = ("avg" if pool == "mean" else "max"), _input(mean, 0)
        parts, merge = g.sequence(src), "concat"
    else:
        head, src = "last", feat
        parts, merge = g.last_states(feat), "concat"
    if not parts:
        parts, merge = g.merged(src, "sequence" if head != "last" else "last")
    if not parts:
        return None, ("the Dense layer's input is not a GRU state or its mean or max over time (fused: last state, "
                      "average or max pooling head)")
    gru, why = _one_gru(parts, "the Dense layer's input")
    if gru is None:
        return None, why
    layers: list[FusedLayer] = []
    seq_lens: list[str] = []  # variable length: every GRU's sequence_lens
    # the last layer: an average head sums its output sequence in the order the graph pools it
    # (go_backwards: reversed by a Slice, i.e. in processing order); the last state has no order
    flip: tuple = tuple(f for _, _, f in parts) if head != "last" else ()
    for _ in range(len(graph.nodes) + 1):  # a cycle of GRU nodes ends here: more layers than nodes
        layer, why = _gru_layer(gru, init, flip, lengths=bool(lengths_name))
        if layer is None:
            return None, why
        if lengths_name and not _input(gru, 4):
            return None, "variable length: a GRU without sequence_lens runs every step of the padded rows"
        seq_lens.append(_input(gru, 4))
        if lengths_name and any(f and not layer.reverse(d) for d, f in enumerate(layer.flip)):
            return None, "variable length: a forward GRU's output reversed in time (no export writes one)"
        layer.merge = merge
        if layers and layers[0].features != layer.width:
            return None, f"a GRU of {layers[0].features} inputs is fed {layer.width} values per step"
        layers.insert(0, layer)
        x = _input(gru, 0)
        tr = g.made_by(x, "Transpose")
        if tr is not None:
            break
        carried = g.made_by(x, "Where") if lengths_name else None
        if carried is not None:  # Keras' last output carried over padded steps: the next GRU never reads them
            x = _input(carried, 1)
        parts, merge = g.sequence(x), "concat"
        if not parts:
            parts, merge = g.merged(x, "sequence")
        if not parts:
            return None, ("the GRU input is neither the model input transposed to time-major nor the output "
                          "sequence of another GRU")
        gru, why = _one_gru(parts, "a GRU's input")
        if gru is None:
            return None, why
        flip = tuple(f for _, _, f in parts)
    else:
        return None, "the GRU layers feed each other in a cycle"
    if _attr(tr, "perm", [], list) != [1, 0, 2]:
        return None, "the GRU input is not the model input transposed to time-major"
    last = layers[-1]
    first_in = dense[0][0].shape[0] if dense else dW.shape[0]
    if first_in != last.width:
        return None, f"the Dense layer has {first_in} inputs, the GRU gives {last.width}"
    F = layers[0].features
    prefix, cur = [], _input(tr, 0)
    producer = g.producer
    gather = g.made_by(cur, "Gather")
    if gather is not None:  # a token model: ids [-> Where(steps < lengths, ids, 0)] [-> Cast(int64)] -> Gather(table)
        table = init.get(_input(gather, 0))
        read = g.resolve(_input(gather, 1))
        cast = producer.get(read)
        ids = g.resolve(_input(cast, 0)) if cast is not None and cast.op_type == "Cast" and \
            _attr(cast, "to", 0, int) == _INT64 else read
        if lengths_name:
            why = _token_lengths(g, ids, {read, ids}, input_name, lengths_name, seq_lens, masks)
            if why:
                return None, f"variable length with token ids: {why}"
            ids = g.resolve(_input(g.made_by(ids, "Where"), 1))
        if (table is None or table.dtype != np.float32 or table.ndim != 2 or table.shape[1] != F
                or _attr(gather, "axis", 0, int) != 0 or ids != input_name):
            return None, "the GRU input is a Gather that is not an Embedding lookup of the model input"
        return FusedSpec(layers=layers, head=head, head_w=np.ascontiguousarray(dW),
                         head_b=np.broadcast_to(db.reshape(-1), (k,)).astype(np.float32), activation=activation,
                         dense=dense, embedding=np.ascontiguousarray(table), lengths=bool(lengths_name),
                         max_reads_zeros=bool(lengths_name) and head == "max" and carry is None), ""
    # variable length: the model input past each row's length replaced by padding, Where(real, x, pad), after the
    # scaling or before it (Keras' Masking ahead of a Normalization); the kernel never reads those steps
    padding = None
    while cur != input_name:
        if len(prefix) > len(graph.nodes):
            return None, "the input scaling nodes form a cycle"
        n = producer.get(cur)
        if lengths_name and padding is None and n is not None and n.op_type == "Where" and _input(n, 2) in init:
            padding, cur = n, g.resolve(_input(n, 1))
            continue
        if n is None or n.op_type not in ("Sub", "Div", "Mul", "Add") or len(n.inputs) != 2:
            op = n.op_type if n else "?"
            return None, (f"the model input reaches the GRU through {op if op.isprintable() else repr(op)} (fused: "
                          "per-feature Sub/Div/Mul/Add only)")
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
    if lengths_name:
        if padding is None:
            return None, "variable length: the GRU input is not the padded model input (Where(real, x, pad))"
        why = _float_lengths(g, padding, input_name, lengths_name, seq_lens, masks)
        if why:
            return None, f"variable length: {why}"
    return FusedSpec(layers=layers, head=head, head_w=np.ascontiguousarray(dW),
                     head_b=np.broadcast_to(db.reshape(-1), (k,)).astype(np.float32), prefix=prefix,
                     activation=activation, dense=dense, lengths=bool(lengths_name),
                     max_reads_zeros=bool(lengths_name) and head == "max" and carry is None), ""
