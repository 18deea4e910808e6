"""Native ONNX GRU export across the configurations people use (issue "Native ONNX GRU op for
Keras 3 GRU layers").

Owns: the coverage tests. Imports: tests/coverage_cases.py (the configurations and the
measurement, shared with tools/coverage_table.py), pipeline.export.native, the builder and
the runtime Predictor. Reads: nothing. Writes: tmp folders only.

Each configuration is a tiny Keras model with random, non-saturating weights, exported with
``export_native`` and run in onnxruntime at two batch sizes and two sequence lengths (one ONNX
model, dynamic axes), on random inputs and on the standardized default order task; masked cases
use right-padded rows of varying length. The graph must use GRU ops (no Loop/Scan) and
max |Keras - ORT| on probabilities must stay <= 1e-5. Unmasked configurations are also unrolled
(``unroll_grus``) at each length and checked against Keras and against the native graph.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from pipeline import artifact  # noqa: E402
import coverage_cases as coverage  # noqa: E402  (tests/coverage_cases.py)
from pipeline.export.native import UnsupportedModelError, export_native  # noqa: E402
from pipeline.verification.unrolled import STRATEGY_ATOL  # noqa: E402
from pipeline.errors import InputError  # noqa: E402

ATOL = 1e-5


@pytest.mark.parametrize("case", coverage.CASES, ids=[c.name for c in coverage.CASES])
def test_native_gru_matches_keras(case: coverage.Case) -> None:
    result = coverage.measure_case(case)
    assert "GRU" in result.ops and result.gru_nodes >= 1
    assert not result.has_loop, result.ops
    # Every (batch size, T) pair ran through the same ONNX model: dynamic batch and time axes.
    assert len(result.per_batch) == 2 * len(coverage.BATCHES) * len(coverage.TIMESTEPS)
    assert result.max_abs_random <= ATOL, result.per_batch
    assert result.max_abs_real <= ATOL, result.per_batch
    # The unrolled batch graph (model_unrolled.onnx) of every unmasked configuration: as close to
    # Keras as the native graph, and within the runtime's strategy tolerance of the native graph.
    if case.variable_length:
        assert result.unrolled_vs_keras is None
    elif result.unrolled_vs_keras is None:  # a layer changes the number of timesteps: no per-step graph
        assert "change the number of timesteps" in result.unrolled_reason, result.unrolled_reason
    else:
        assert result.unrolled_vs_keras <= ATOL, result.unrolled_vs_keras
        assert result.unrolled_vs_native <= STRATEGY_ATOL, result.unrolled_vs_native


def test_inputs_exercise_padding_and_unsaturated_outputs() -> None:
    """The measurement inputs really contain padded rows, and the random weights give spread outputs."""
    case = coverage.case_by_name("Masking + GRU + max pool")
    batches = dict(coverage.make_inputs(case))
    X = batches[f"random B={max(coverage.BATCHES)} T={max(coverage.TIMESTEPS)}"]  # (B, T, F)
    lengths = (X != 0).any(axis=2).sum(axis=1)
    assert lengths.min() < X.shape[1] == lengths.max()
    p = coverage.keras_run(coverage.build_case(case), X)
    assert 0.02 < p.min() and p.max() < 0.98 and p.std() > 1e-3


def test_masked_max_pool_needs_keras_padded_values(monkeypatch) -> None:
    """Keras' GlobalMaxPooling1D ignores the mask and sees the GRU's last output repeated on padded
    steps; ONNX writes zeros there. Without the exporter's carry-forward the max differs."""
    from pipeline.export import native as onnx_native

    case = coverage.case_by_name("Masking + GRU + max pool")
    assert coverage.measure_case(case).max_abs <= ATOL
    monkeypatch.setattr(onnx_native, "_carry_last", lambda g, seq, last, mask: seq)
    assert coverage.measure_case(case).max_abs > 1e-3


def test_normalization_epsilon_clamp_is_exercised(monkeypatch) -> None:
    """The raw Normalization cases have a feature whose sqrt(variance) is below the backend epsilon:
    a graph built without Keras' max(sqrt(variance), epsilon) clamp disagrees."""
    case = coverage.case_by_name("Normalization + Bidirectional + avg pool")
    model = coverage.build_case(case)
    monkeypatch.setattr(keras.config, "epsilon", lambda: 0.0)  # read by the emitter only
    session = coverage.ort_session(export_native(model, "x", 17))
    X = dict(coverage.make_inputs(case))[f"random B={max(coverage.BATCHES)} T={max(coverage.TIMESTEPS)}"]
    assert np.abs(coverage.run_onnx(session, X) - coverage.keras_run(model, X)).max() > 1e-3


@pytest.mark.parametrize("axis", [1, (1, 2)])
def test_normalization_over_time_is_refused(axis) -> None:
    """Statistics that vary over time (or batch) are refused, naming the axis."""
    inputs = keras.Input(shape=(7, coverage.FEATURES), name="x")  # (batch, 7, F): a fixed axis to normalize over
    norm = keras.layers.Normalization(axis=axis)
    norm.adapt(np.random.default_rng(0).standard_normal((4, 7, coverage.FEATURES)).astype(np.float32))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(4)(norm(inputs))))
    with pytest.raises(UnsupportedModelError, match=re.escape(f"axis={axis}")):
        export_native(model, "x", 17)


# ---------------------------------------------------------------------------- not expressible natively

class _MinimalCell(keras.layers.Layer):
    """A custom RNN cell: h' = tanh(x W + h U)."""

    def __init__(self, units: int, **kw) -> None:
        super().__init__(**kw)
        self.units = units
        self.state_size = units

    def build(self, input_shape) -> None:
        self.w = self.add_weight(shape=(input_shape[-1], self.units))
        self.u = self.add_weight(shape=(self.units, self.units))

    def call(self, x, states):
        h = keras.ops.tanh(keras.ops.matmul(x, self.w) + keras.ops.matmul(states[0], self.u))
        return h, [h]


def _unsupported_model(kind: str, units: int = 4, features: int = 3) -> keras.Model:
    inputs = keras.Input(shape=(None, features), name="x")  # (batch, time, F)
    if kind == "custom cell":
        x = keras.layers.RNN(_MinimalCell(units))(inputs)
    else:  # an LSTM front-end: no native emitter (tf2onnx makes it a native LSTM op)
        x = keras.layers.LSTM(units, return_sequences=True)(inputs)
        x = keras.layers.GRU(units)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


@pytest.mark.parametrize("kind", ["custom cell", "LSTM"])
def test_unsupported_layer_raises_and_auto_falls_back(kind: str) -> None:
    from pipeline.export.convert import convert

    model = _unsupported_model(kind)
    with pytest.raises(UnsupportedModelError):
        export_native(model, "x", 17)
    proto, backend, reason = convert(model, "auto", 17)
    assert backend == "tf2onnx" and reason
    X = np.random.default_rng(0).standard_normal((3, 7, 3)).astype(np.float32)
    err = np.abs(coverage.run_onnx(coverage.ort_session(proto), X) - coverage.keras_run(model, X)).max()
    assert err <= ATOL
    with pytest.raises(UnsupportedModelError):
        convert(model, "native", 17)


def test_go_backwards_stateful_graph_is_refused() -> None:
    """Streaming graphs carry state forward in time; a go_backwards GRU cannot be streamed."""
    model = coverage.build_case(coverage.case_by_name("GRU go_backwards"))
    with pytest.raises(UnsupportedModelError, match="go_backwards"):
        export_native(model, "x", 17, stateful=True)


def test_run_build_falls_back_to_tf2onnx_and_records_why(tmp_path, monkeypatch) -> None:
    """End to end (slow): an LSTM front-end model builds through tf2onnx, verified, reason in the manifest."""
    from pipeline.training import run as builder, model as model_module
    from pipeline.settings import load_config

    def conv_gru_model(cfg, n_features, masking, learning_rate=1e-3, n_classes=2):
        return _unsupported_model("LSTM", cfg.units, n_features)

    monkeypatch.setattr(model_module, "build_model", conv_gru_model)
    cfg = load_config(None, {
        "out": str(tmp_path / "fallback"),
        "data": {"n_samples": 120, "timesteps": 10, "features": 3},
        "model": {"units": 4, "members": 1},  # build_model is replaced: one model, no ensemble
        "train": {"epochs": 1, "batch_size": 32, "verbose": "0"},
        "verify": {"n_random": 16, "large_batch": 32, "odd_batch": 5},
    })
    result = builder.run_build(cfg)
    manifest = json.loads((result.out_dir / artifact.MANIFEST_FILE).read_text())
    assert manifest["model"]["backend"] == "tf2onnx"
    assert "LSTM" in manifest["model"]["fallback_reason"]
    assert "Loop" in manifest["model"]["ops"] or "Scan" in manifest["model"]["ops"]
    assert manifest["equivalence"]["passed"] and manifest["equivalence"]["max_abs_error"] <= ATOL


# ---------------------------------------------------------------------------- left padding

def _write_masked_folder(folder: Path) -> keras.Model:
    """A minimal exported folder (no preprocessing) around the native "Masking + GRU" graph, with the
    ``lengths`` input a user's Masking(0.0) model gets (pipeline.export.scaling)."""
    from pipeline.export.scaling import embed_preprocessing

    model = coverage.build_case(coverage.case_by_name("Masking + GRU"))
    proto = embed_preprocessing(export_native(model, "x", 17), {"type": "none"}, masking=True, pad_value=0.0)
    folder.mkdir(parents=True)
    (folder / artifact.MODEL_FILE).write_bytes(proto.SerializeToString())
    artifact.write_manifest(folder, {
        "schema_version": artifact.SCHEMA_VERSION,
        "model": {"file": artifact.MODEL_FILE, "sha256": artifact.sha256_file(folder / artifact.MODEL_FILE),
                  "opset": 17, "backend": "native", "fallback_reason": None,
                  "ops": coverage.graph_ops(proto)},
        "input": {"name": "x", "dtype": "float32", "shape": ["batch", "time", coverage.FEATURES], "kind": "features",
                  "lengths": "lengths"},
        "output": {"name": proto.graph.output[0].name, "dtype": "float32", "shape": ["batch", 1]},
        "preprocessing": {"type": "none"},
        "masking": {"enabled": True, "mask_value": 0.0, "padding": "lengths"},
        "task": "binary",
        "decision": {"rule": "threshold", "threshold": 0.5},
        "class_names": [0, 1],
    })
    return model


def test_left_padding_is_refused_by_the_runtime(tmp_path) -> None:
    """Keras masks left padding, ONNX sequence_lens cannot (it counts steps from the start), so the
    runtime refuses mask-valued steps before a row's end (a user's Masking model) instead of answering
    differently from Keras."""
    from pipeline.runtime import Predictor

    model = _write_masked_folder(tmp_path / "masked")
    predictor = Predictor.load(tmp_path / "masked")
    rng = np.random.default_rng(1)
    real = rng.standard_normal((2, 6, coverage.FEATURES)).astype(np.float32)  # (B, 6, F)
    right = np.concatenate([real, np.zeros((2, 3, coverage.FEATURES), np.float32)], axis=1)  # (B, 9, F)
    left = np.concatenate([np.zeros((2, 3, coverage.FEATURES), np.float32), real], axis=1)

    # Right padding: runtime == Keras; left padding: Keras still equals the unpadded answer ...
    p_right = predictor.predict_proba(right, lengths=np.array([6, 6]))
    assert np.abs(p_right - coverage.keras_run(model, right)).max() <= ATOL
    assert np.abs(coverage.keras_run(model, left) - coverage.keras_run(model, real)).max() <= ATOL
    # ... but the raw ONNX graph would not, which is why the runtime must refuse it.
    raw = coverage.run_onnx(coverage.ort_session(export_native(model, "x", 17)), left)
    assert np.abs(raw - coverage.keras_run(model, left)).max() > 1e-3
    with pytest.raises(InputError, match="mask value"):
        predictor.predict_proba(left)
    with pytest.raises(InputError, match="mask value"):
        predictor.predict_proba(left, lengths=np.array([9, 9]))


# ---------------------------------------------------------------------------- build CLI

def test_build_cli_stacked_bidirectional(tmp_path) -> None:
    """End to end (slow): gru-build with 2 stacked Bidirectional layers exports GRU ops and verifies."""
    from pipeline.training.cli import main

    out = tmp_path / "bi2"
    code = main(["--samples", "200", "--timesteps", "12", "--features", "3", "--units", "8", "--epochs", "1",
                 "--layers", "2", "--bidirectional", "--out", str(out)])
    assert code == 0
    manifest = json.loads((out / artifact.MANIFEST_FILE).read_text())
    assert manifest["model"]["backend"] == "native" and manifest["model"]["fallback_reason"] is None
    assert "GRU" in manifest["model"]["ops"] and "Loop" not in manifest["model"]["ops"]
    assert manifest["equivalence"]["passed"] and manifest["equivalence"]["max_abs_error"] <= ATOL
    import onnx

    proto = onnx.load(str(out / artifact.MODEL_FILE))
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == 2
    assert all(a.s == b"bidirectional" for n in grus for a in n.attribute if a.name == "direction")
