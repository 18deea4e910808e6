"""pipeline/runtime/fused/onnx_reader.py on bytes that are not a clean model: truncated at every
offset, bytes replaced at random (fixed seeds), hypothesis' insertions and replacements, and one
hand-made case per kind of damage. Only two outcomes are allowed: OnnxReadError (a ValueError: the
loader falls back to onnxruntime and records the reason), or a correct parse, which match_fused
then turns into a spec or a reason without raising.

A correct parse is the reader's result equal, field by field, to protobuf's own parse of the same
bytes (``_protobuf_view``: the ModelProto class of the tiny model tests/tiny_models.py builds; no
``onnx`` import in tests/runtime, see test_boundary.py). When protobuf rejects bytes the reader
accepts, the damage lies in a part the reader skips (value_info types, doc strings...), whose
framing it checks but whose content it does not read; those cases are counted, not compared.
tests/export/test_onnx_reader_vs_onnx.py compares the reader with onnx.load on real exports.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.runtime.fused.onnx_reader import Graph, OnnxReadError, match_fused, parse_model
from tiny_models import tiny_model_proto, tiny_preprocessing

EXPORTED = Path(__file__).resolve().parents[2] / "exported"
_TYPES = {1: np.float32, 6: np.int32, 7: np.int64, 11: np.float64}  # the tensor types the reader reads


def _tiny_proto():
    """x -> Sub -> Div -> Transpose -> GRU -> Squeeze -> Gemm -> Sigmoid, F=3, H=4 (about 1 KB)."""
    return tiny_model_proto(3, 4, seed=5, raw_input=tiny_preprocessing(3))


def _tensor_view(t):
    """What the reader should make of a TensorProto object, or OnnxReadError's class when it should refuse."""
    if t.data_location == 1 or len(t.external_data) or any(d < 0 for d in t.dims):
        return OnnxReadError
    if t.data_type not in _TYPES:
        return np.empty(0)
    dtype = np.dtype(_TYPES[t.data_type])
    if t.HasField("raw_data"):
        if len(t.raw_data) % dtype.itemsize:
            return OnnxReadError
        arr = np.frombuffer(t.raw_data, dtype.newbyteorder("<")).astype(dtype)
    else:
        values = {1: t.float_data, 6: t.int32_data, 7: t.int64_data, 11: t.double_data}[t.data_type]
        arr = np.asarray(list(values), dtype)
    return arr.reshape(list(t.dims)) if arr.size == int(np.prod(list(t.dims), dtype=object)) else OnnxReadError


def _attr_view(a):
    """An AttributeProto object's value as onnx.helper.get_attribute_value reads it (the field its
    type names); without a known type, the first of t, g, s, i, f present, else the lists."""
    single = {4: lambda: _tensor_view(a.t), 5: lambda: "<graph>", 3: lambda: a.s.decode("utf-8", "replace"),
              2: lambda: a.i, 1: lambda: float(np.float32(a.f))}
    lists = {6: lambda: [float(np.float32(v)) for v in a.floats], 7: lambda: list(a.ints),
             8: lambda: [s.decode("utf-8", "replace") for s in a.strings]}
    if a.type in single or a.type in lists:
        return {**single, **lists}[a.type]()
    for kind, name in ((4, "t"), (5, "g"), (3, "s"), (2, "i"), (1, "f")):
        if a.HasField(name):
            return single[kind]()
    return lists[7]() or lists[6]() or lists[8]()


def _protobuf_view(data: bytes, proto_class):
    """protobuf's parse of ``data`` in the reader's terms, OnnxReadError's class where the reader must
    refuse what protobuf accepts, or None when protobuf refuses the bytes."""
    m = proto_class()
    try:
        m.ParseFromString(data)
    except Exception:  # google.protobuf.message.DecodeError, or a RuntimeWarning-turned-error in upb
        return None
    if not m.HasField("graph"):
        return OnnxReadError
    g = m.graph
    inits = {}
    for t in g.initializer:
        inits[t.name] = _tensor_view(t)
    nodes = []
    for n in g.node:
        domain = n.domain if n.domain not in ("", "ai.onnx") else ""
        attrs = {a.name: _attr_view(a) for a in n.attribute}
        nodes.append(((f"{domain}::{n.op_type or '?'}" if domain else n.op_type), list(n.input), list(n.output), attrs))
    flat = list(inits.values()) + [v for n in nodes for v in n[3].values()]
    if any(v is OnnxReadError for v in flat):
        return OnnxReadError
    return {"nodes": nodes, "inits": inits, "inputs": [i.name for i in g.input if i.name not in inits],
            "outputs": [o.name for o in g.output], "opset": [(o.domain, o.version) for o in m.opset_import],
            "metadata": [(p.key, p.value) for p in m.metadata_props], "ir_version": m.ir_version}


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _reader_view(g: Graph) -> dict:
    return {"nodes": [(n.op_type, n.inputs, n.outputs, n.attrs) for n in g.nodes], "inits": g.initializers,
            "inputs": g.inputs, "outputs": g.outputs, "opset": g.opset_import, "metadata": g.metadata_props,
            "ir_version": g.ir_version}


def _check(data: bytes, proto_class, tally: dict, output: str = "probability") -> None:
    """The reader on ``data``: OnnxReadError, or protobuf's parse, then match_fused (for the graph
    output ``output``) without raising."""
    try:
        g = parse_model(data)
    except OnnxReadError as exc:
        assert str(exc) and "\n" not in str(exc)
        tally["refused"] = tally.get("refused", 0) + 1
        return
    want = _protobuf_view(data, proto_class)
    assert want is not OnnxReadError, "the reader accepted what it must refuse"
    if want is None:
        tally["protobuf refused"] = tally.get("protobuf refused", 0) + 1
    else:
        got = _reader_view(g)
        bad = [k for k in want if not _same(got[k], want[k])]
        assert not bad, f"the reader's {bad} differ from protobuf's: {[got[k] for k in bad]} vs {[want[k] for k in bad]}"
        tally["parsed"] = tally.get("parsed", 0) + 1
    spec, why = match_fused(g, "x", output)
    assert (spec is None) == bool(why)


def test_clean_models_parse_as_protobuf_does():
    for proto in (_tiny_proto(), tiny_model_proto(1, 33, seed=2)):
        tally: dict = {}
        _check(proto.SerializeToString(), type(proto), tally)
        assert tally == {"parsed": 1}
    data = (EXPORTED / "model.onnx").read_bytes()
    tally = {}
    _check(data, type(_tiny_proto()), tally)
    assert tally == {"parsed": 1}
    assert match_fused(parse_model(data), "x", "probability")[0] is not None


def test_every_truncation_of_a_small_model():
    proto = _tiny_proto()
    data = proto.SerializeToString()
    tally: dict = {}
    for n in range(len(data)):
        _check(data[:n], type(proto), tally)
    assert tally["refused"] > len(data) // 2, tally  # most cuts land inside a field


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_k_way_heads_parse_and_their_damage_is_refused_or_read(task):
    """The k-way heads (Gemm to 5 units, then Softmax or Sigmoid): the clean graph parses as protobuf
    does and matches; every truncation and 600 random byte replacements give the reader's error or
    protobuf's parse, and match_fused a spec or a reason, never another exception."""
    proto = tiny_model_proto(3, 4, seed=6, raw_input=tiny_preprocessing(3), task=task, n_classes=5)
    data = proto.SerializeToString()
    tally: dict = {}
    _check(data, type(proto), tally, "probabilities")
    assert tally == {"parsed": 1}
    spec, why = match_fused(parse_model(data), "x", "probabilities")
    assert spec is not None and spec.outputs == 5, why
    for n in range(len(data)):
        _check(data[:n], type(proto), tally, "probabilities")
    raw, rng = np.frombuffer(data, np.uint8), np.random.default_rng(11)
    for _ in range(600):
        bad = raw.copy()
        where = rng.integers(0, len(bad), rng.integers(1, 4))
        bad[where] = rng.integers(0, 256, len(where))
        _check(bad.tobytes(), type(proto), tally, "probabilities")
    assert tally["refused"] > len(data) // 2 and tally["parsed"] > 100, tally


def test_truncations_of_the_committed_model():
    data = (EXPORTED / "model.onnx").read_bytes()
    proto_class = type(_tiny_proto())
    tally: dict = {}
    for n in list(range(0, 400)) + list(range(400, len(data), 97)) + [len(data) - 1]:
        _check(data[:n], proto_class, tally)
    assert tally["refused"] > 0, tally


@pytest.mark.parametrize("seed", [0, 1])
def test_random_byte_replacements(seed):
    """1 to 3 bytes replaced at random positions, 1500 times per seed."""
    proto = _tiny_proto()
    data = np.frombuffer(proto.SerializeToString(), np.uint8)
    rng = np.random.default_rng(seed)
    tally: dict = {}
    for _ in range(1500):
        bad = data.copy()
        where = rng.integers(0, len(bad), rng.integers(1, 4))
        bad[where] = rng.integers(0, 256, len(where))
        _check(bad.tobytes(), type(proto), tally)
    assert tally.get("refused", 0) > 100 and tally.get("parsed", 0) > 100, tally


@pytest.mark.parametrize("name", ["model.onnx", "model_unrolled.onnx"])  # the second has tensor attributes
def test_random_byte_replacements_in_the_committed_models(name):
    data = np.frombuffer((EXPORTED / name).read_bytes(), np.uint8)
    proto_class = type(_tiny_proto())
    rng = np.random.default_rng(7)
    tally: dict = {}
    for _ in range(150):
        bad = data.copy()
        where = rng.integers(0, len(bad), rng.integers(1, 4))
        bad[where] = rng.integers(0, 256, len(where))
        _check(bad.tobytes(), proto_class, tally)
    assert sum(tally.values()) == 150


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_insertions_deletions_and_replacements(data):
    proto = _tiny_proto()
    raw = proto.SerializeToString()
    start = data.draw(st.integers(0, len(raw)), label="start")
    stop = data.draw(st.integers(start, min(len(raw), start + 8)), label="stop")
    new = data.draw(st.binary(max_size=12), label="new bytes")
    _check(raw[:start] + new + raw[stop:], type(proto), {})


# ---------------------------------------------------------------------------- one case per damage
def _key(num: int, wt: int) -> bytes:
    return _varint((num << 3) | wt)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _varint(len(payload)) + payload


def _model(graph: bytes) -> bytes:
    return _ld(7, graph)


def _tensor(*fields: bytes) -> bytes:
    return _model(_ld(5, b"".join(fields)))


def _attr_node(*attr_fields: bytes) -> bytes:
    return _model(_ld(1, _ld(4, b"GRU") + _ld(5, b"".join(attr_fields))))


DAMAGES = [  # (bytes, what the error must say)
    (b"", "no graph"),
    (_key(7, 2), "truncated varint"),
    (_key(7, 2) + _varint(5) + b"abc", "needs 5 bytes, 3 left"),
    (b"\xff" * 11, "longer than 10 bytes"),
    (b"\x08" + b"\xff" * 9 + b"\x7f", "over 64 bits"),
    (_key(1, 3) + b"\x00", "wire type 3"),
    (_key(1, 7), "wire type 7"),
    (b"\x00\x01", "field number 0"),
    (_key(1, 1) + b"\x00" * 7, "needs 8 bytes, 7 left"),
    (_model(_key(5, 5) + b"\x00\x00"), "needs 4 bytes, 2 left"),
    (_key(7, 0) + _varint(3), "model graph (field 7) has wire type 0, expected 2"),
    (_key(1, 2) + _varint(0), "model ir_version (field 1) has wire type 2, expected 0"),
    (_model(_ld(1, _ld(4, b"\xff\xfe"))), "node op_type (field 4) is not UTF-8"),
    (_model(_ld(1, _key(1, 0) + _varint(3))), "node input (field 1) has wire type 0"),
    (_tensor(_ld(8, b"w"), _key(2, 0) + _varint(1), _key(1, 0) + _varint(3), _ld(9, b"\x00" * 10)),
     "initializer w: 10 raw bytes, not a multiple of 4"),
    (_tensor(_ld(8, b"w"), _key(2, 0) + _varint(1), _key(1, 0) + _varint(3), _ld(9, b"\x00" * 8)),
     "initializer w: 2 values for dims [3]"),
    (_tensor(_ld(8, b"w"), _key(2, 0) + _varint(1), _key(1, 0) + _varint((1 << 64) - 2)), "negative dims [-2]"),
    (_tensor(_ld(8, b"w"), _key(2, 0) + _varint(1), _ld(4, b"\x00" * 6)), "float_data (field 4): 6 bytes"),
    (_tensor(_ld(8, b"w"), _key(2, 0) + _varint(11), _key(10, 5) + b"\x00" * 4), "double_data (field 10) has wire type 5"),
    (_tensor(_ld(8, b"w"), _key(14, 0) + _varint(1)), "w keeps its data outside the file"),
    (_tensor(_ld(8, b"w"), _ld(13, _ld(1, b"location") + _ld(2, b"w.bin"))), "w keeps its data outside the file"),
    (_attr_node(_ld(1, b"clip"), _key(2, 0) + _varint(1)), "attribute 'clip' f (field 2) has wire type 0, expected 5"),
    (_attr_node(_ld(1, b"alpha"), _key(2, 5) + b"\x00\x00"), "needs 4 bytes, 2 left"),
    (_attr_node(_ld(1, b"ints"), _ld(8, b"\x80")), "truncated varint"),
    (_attr_node(_ld(1, b"t"), _ld(5, _ld(9, b"\x00" * 3) + _key(2, 0) + _varint(1))), "3 raw bytes"),
]


@pytest.mark.parametrize("data,message", DAMAGES, ids=[m for _, m in DAMAGES])
def test_each_kind_of_damage_is_named(data, message):
    with pytest.raises(OnnxReadError) as exc:
        parse_model(data)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_valid_forms_protobuf_writes_are_read():
    """int32_data and double_data initializers, a float attribute, the graph field given twice
    (protobuf merges the two), an explicit data_location DEFAULT and a 64-bit negative int."""
    graph1 = _ld(5, _ld(8, b"i32") + _key(2, 0) + _varint(6) + _key(1, 0) + _varint(2)
                 + _ld(5, _varint(7) + _varint((1 << 64) - 3)) + _key(14, 0) + _varint(0))
    graph2 = _ld(5, _ld(8, b"f64") + _key(2, 0) + _varint(11) + _key(1, 0) + _varint(2) + _ld(10, struct.pack("<2d", 0.5, -2.0)))
    graph2 += _ld(1, _ld(4, b"Gemm") + _ld(5, _ld(1, b"alpha") + _key(2, 5) + struct.pack("<f", 0.25)))
    graph2 += _ld(1, _ld(4, b"Neg") + _ld(5, _ld(1, b"k") + _key(3, 0) + _varint((1 << 64) - 5)))
    g = parse_model(_model(graph1) + _model(graph2))
    assert g.initializers["i32"].dtype == np.int32 and g.initializers["i32"].tolist() == [7, -3]
    assert g.initializers["f64"].tolist() == [0.5, -2.0]
    assert [(n.op_type, n.attrs) for n in g.nodes] == [("Gemm", {"alpha": 0.25}), ("Neg", {"k": -5})]
