"""The fused kernel's ONNX reader (pipeline/runtime/fused/onnx_reader.py, no onnx package) against
onnx.load, field by field, on every graph the tests export: exported/model.onnx, stream.onnx and
model_unrolled.onnx, the tiny graphs of tests/tiny_models.py, and the Keras models of
tests/export/test_fused_coverage.py (every layer kind the kernel covers, and the merges it does not).

Compared: each node's op type (with its domain), inputs, outputs and attributes (as
onnx.helper.get_attribute_value reads them: tensors through onnx.numpy_helper.to_array, graphs as
"<graph>"), each initializer's name, dims, type and values (float, int32, int64 and double; the
reader gives other types as empty arrays), the graph inputs (those that are not initializers) and
outputs, metadata_props, opset_import and ir_version.

Imports onnx (the build extra); the Keras cases also need TensorFlow and skip without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from pipeline.runtime.fused.onnx_reader import parse_model  # noqa: E402
from tiny_models import tiny_model_proto, tiny_preprocessing  # noqa: E402

EXPORTED = Path(__file__).resolve().parents[2] / "exported"
_READ_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.DOUBLE}


def _value(v):
    """An attribute value of onnx.helper.get_attribute_value in the reader's terms."""
    if isinstance(v, onnx.TensorProto):
        return _array(v)
    if isinstance(v, onnx.GraphProto):
        return "<graph>"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _array(t) -> np.ndarray:
    return numpy_helper.to_array(t) if t.data_type in _READ_TYPES else np.empty(0)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _compare(data: bytes, what: str) -> int:
    """Assert the reader's parse of ``data`` equals onnx.load's, field by field; returns the fields compared."""
    m = onnx.load_model_from_string(data)
    g = parse_model(data)
    checked = 0
    assert len(g.nodes) == len(m.graph.node), what
    for i, (got, n) in enumerate(zip(g.nodes, m.graph.node)):
        op = f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        where = f"{what} node {i} ({n.op_type} {n.name})"
        assert got.op_type == op, where
        assert got.inputs == list(n.input) and got.outputs == list(n.output), where
        want = {a.name: _value(helper.get_attribute_value(a)) for a in n.attribute}
        assert got.attrs.keys() == want.keys(), where
        for k in want:
            assert _same(got.attrs[k], want[k]), f"{where} attribute {k}: {got.attrs[k]!r} vs {want[k]!r}"
        checked += 3 + len(want)
    want_inits = {t.name: _array(t) for t in m.graph.initializer}
    assert g.initializers.keys() == want_inits.keys(), what
    for k, arr in want_inits.items():
        assert _same(g.initializers[k], arr), f"{what} initializer {k}: {g.initializers[k].dtype}{g.initializers[k].shape}"
    assert g.inputs == [i.name for i in m.graph.input if i.name not in want_inits], what
    assert g.outputs == [o.name for o in m.graph.output], what
    assert g.metadata_props == [(p.key, p.value) for p in m.metadata_props], what
    assert g.opset_import == [(o.domain, o.version) for o in m.opset_import], what
    assert g.ir_version == m.ir_version, what
    return checked + len(want_inits) + 5


@pytest.mark.parametrize("name", ["model.onnx", "stream.onnx", "model_unrolled.onnx"])
def test_the_committed_graphs(name):
    data = (EXPORTED / name).read_bytes()
    assert _compare(data, name) > 30
    assert parse_model(data).metadata_props, "the exporter writes metadata_props: the comparison must see some"


@pytest.mark.parametrize("kw", [{}, {"n_features": 1, "units": 33, "seed": 2},
                                {"raw_input": tiny_preprocessing(3)},
                                {"raw_input": tiny_preprocessing(3), "masking": True},
                                {"task": "multiclass", "n_classes": 10}, {"task": "multilabel", "n_classes": 4}],
                         ids=["plain", "F1 H33", "scaling", "scaling + masking", "softmax k=10", "multilabel k=4"])
def test_the_tiny_graphs(kw):
    _compare(tiny_model_proto(**kw).SerializeToString(), f"tiny {kw}")


def test_the_keras_coverage_graphs():
    coverage = pytest.importorskip("test_fused_coverage")  # skips without TensorFlow
    for case in (*coverage.CASES, *coverage.K_CASES):
        _compare(coverage._model_bytes(case), case)


def test_the_bidirectional_merges_the_kernel_does_not_cover():
    coverage = pytest.importorskip("test_fused_coverage")
    keras = coverage.keras
    for merge in ("sum", "mul", "ave"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(None, coverage.F), name="x")
        x = coverage._bi(6, merge, return_sequences=True)(inputs)
        x = keras.layers.GlobalAveragePooling1D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        _compare(coverage.export_native(model, "x", coverage.OPSET).SerializeToString(), f"Bidirectional {merge}")
