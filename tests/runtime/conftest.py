"""Shared fixtures for the runtime tests.

``tiny_model_dir``: a tiny, valid exported folder written directly with ``onnx.helper`` (a GRU
node graph + manifest.json shaped like ``pipeline.training.run`` writes it), so the runtime
tests need neither TensorFlow, Keras nor a trained model. Writing the graph does need the ``onnx``
package: a build dependency (the ``build`` extra), not part of the runtime install, imported only
inside ``tiny_model_proto``. ``write_tiny_model`` makes variants (other feature count, masking, a
broken manifest...) in any folder.

``CASE_COUNTS`` collects how many generated cases the property tests ran; the summary is
printed at the end of the session (and written to ``$GRU_CASE_COUNTS_FILE`` when set).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

TINY_FEATURES = 3
TINY_UNITS = 4
INPUT_NAME, OUTPUT_NAME = "x", "probability"

CASE_COUNTS: Counter = Counter()


def tiny_model_proto(n_features: int = TINY_FEATURES, units: int = TINY_UNITS, seed: int = 0,
                     input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME):
    """ONNX graph x (batch, time, F) -> Transpose -> GRU -> Y_h -> Squeeze -> Gemm -> Sigmoid (batch, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    H, F = units, n_features
    W = (rng.standard_normal((1, 3 * H, F)) * 0.5).astype(np.float32)
    R = (rng.standard_normal((1, 3 * H, H)) * 0.5).astype(np.float32)
    B = (rng.standard_normal((1, 6 * H)) * 0.1).astype(np.float32)
    dense_w = (rng.standard_normal((H, 1))).astype(np.float32)
    dense_b = np.array([0.1], dtype=np.float32)
    inits = [
        numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(B, "B"),
        numpy_helper.from_array(dense_w, "dense_w"), numpy_helper.from_array(dense_b, "dense_b"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
    ]
    nodes = [
        helper.make_node("Transpose", [input_name], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["x_tbf", "W", "R", "B"], ["", "h_last"], hidden_size=H, linear_before_reset=1),
        helper.make_node("Squeeze", ["h_last", "axes0"], ["h"]),
        helper.make_node("Gemm", ["h", "dense_w", "dense_b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_gru",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", "time", F])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_manifest(model_sha256: str, n_features: int = TINY_FEATURES, masking: bool = False,
                  preprocessing: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A manifest with the keys and shapes builder.py writes (trimmed to what the runtime reads)."""
    if preprocessing is None:
        preprocessing = {"type": "standardize", "mean": [0.25 * (j + 1) for j in range(n_features)],
                         "std": [0.5 + 0.25 * j for j in range(n_features)]}
    return {
        "schema_version": 1,
        "model": {"file": "model.onnx", "sha256": model_sha256, "opset": 17, "backend": "native",
                  "fallback_reason": None, "ops": ["GRU", "Gemm", "Sigmoid", "Squeeze", "Transpose"]},
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", "time", n_features], "kind": "features"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", 1], "meaning": "probability of class 1"},
        "preprocessing": preprocessing,
        "masking": {"enabled": masking, "mask_value": 0.0 if masking else None, "padding": "right" if masking else None},
        "threshold": 0.5,
        "threshold_source": "fixed",
        "class_names": [0, 1],
        "seed": 0,
        "versions": {"pipeline": "test"},
    }


def write_tiny_model(folder: str | os.PathLike, n_features: int = TINY_FEATURES, units: int = TINY_UNITS,
                     seed: int = 0, masking: bool = False, **manifest_kw) -> Path:
    """Write model.onnx + manifest.json into ``folder`` (created); return the folder."""
    from pipeline import artifact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / artifact.MODEL_FILE
    model_path.write_bytes(tiny_model_proto(n_features, units, seed).SerializeToString())
    manifest = tiny_manifest(artifact.sha256_file(model_path), n_features, masking, **manifest_kw)
    artifact.write_manifest(folder, manifest)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A valid exported folder: F=3, 4 GRU units, standardize preprocessing, no masking."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model") / "exported")


@pytest.fixture(scope="session")
def tiny_masked_model_dir(tmp_path_factory) -> Path:
    """Like ``tiny_model_dir`` but the manifest says the model masks padding (mask value 0)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_masked") / "exported", masking=True)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``write_tiny_model(folder, n_features=3, units=4, seed=0, masking=False, preprocessing=None)``."""
    return write_tiny_model


@pytest.fixture(scope="session")
def case_counts() -> Counter:
    """Counter of generated cases per property test (``case_counts[name] += 1`` in the test body)."""
    return CASE_COUNTS


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir):
    from pipeline.runtime import Predictor

    return Predictor.load(tiny_model_dir)


def pytest_terminal_summary(terminalreporter):
    if not CASE_COUNTS:
        return
    total = sum(CASE_COUNTS.values())
    terminalreporter.write_sep("-", f"generated cases run by property tests: {total}")
    for name, count in sorted(CASE_COUNTS.items()):
        terminalreporter.write_line(f"  {name}: {count}")
    target = os.environ.get("GRU_CASE_COUNTS_FILE")
    if target:
        Path(target).write_text(json.dumps({"total": total, **CASE_COUNTS}, indent=2) + "\n")
