"""Tiny exported folders written directly with ``onnx.helper``: a GRU node graph + manifest.json
shaped like ``pipeline.export.exporter`` writes it, so tests need neither TensorFlow, Keras nor a
trained model. Shared by tests/runtime (through its conftest.py) and tests/export.

Writing the graph needs the ``onnx`` package: a build dependency (the ``build`` extra), not part of
the runtime install, imported only inside ``tiny_model_proto`` and ``write_tiny_model``. Like every
current export (schema 2), the graph takes raw features: ``pipeline.export.scaling.embed_preprocessing``
puts the manifest's scaling (and, for masked models, the all-zero-step padding rule) in front of the
GRU, written here with onnx.helper like the rest of the tiny graph (no pipeline.export module is
imported; tests/export/test_self_contained.py checks ``embed_preprocessing`` itself).
``write_tiny_model`` makes variants (other feature count, masking, a broken manifest, the old
schema 1 with scaling outside the graph...) in any folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

TINY_FEATURES = 3
TINY_UNITS = 4
INPUT_NAME, OUTPUT_NAME = "x", "probability"


def tiny_model_proto(n_features: int = TINY_FEATURES, units: int = TINY_UNITS, seed: int = 0,
                     input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                     raw_input: Optional[dict[str, Any]] = None, masking: bool = False):
    """ONNX graph x (batch, time, F) -> Transpose -> GRU -> Y_h -> Squeeze -> Gemm -> Sigmoid (batch, 1).

    ``raw_input``: a standardize entry whose scaling the graph does itself first, x -> (x - mean) / std
    (schema 2); with ``masking`` the steps whose raw features are all 0 then become exactly 0.
    """
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
    nodes, gru_input = [], input_name
    if raw_input is not None and raw_input.get("type") == "standardize":
        inits += [numpy_helper.from_array(np.asarray(raw_input["mean"], np.float32), "mean"),
                  numpy_helper.from_array(np.asarray(raw_input["std"], np.float32), "std")]
        nodes += [helper.make_node("Sub", [input_name, "mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "std"], ["scaled"])]
        gru_input = "scaled"
        if masking:
            inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
            nodes += [helper.make_node("Equal", [input_name, "zero"], ["is_zero"]),
                      helper.make_node("Not", ["is_zero"], ["nonzero"]),
                      helper.make_node("Cast", ["nonzero"], ["nonzero_f"], to=TensorProto.FLOAT),
                      helper.make_node("ReduceMax", ["nonzero_f"], ["real_f"], axes=[2], keepdims=1),
                      helper.make_node("Cast", ["real_f"], ["real"], to=TensorProto.BOOL),
                      helper.make_node("Where", ["real", "scaled", "zero"], ["scaled_masked"])]
            gru_input = "scaled_masked"
    nodes += [
        helper.make_node("Transpose", [gru_input], ["x_tbf"], perm=[1, 0, 2]),
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


def tiny_preprocessing(n_features: int = TINY_FEATURES) -> dict[str, Any]:
    return {"type": "standardize", "mean": [0.25 * (j + 1) for j in range(n_features)],
            "std": [0.5 + 0.25 * j for j in range(n_features)]}


def tiny_manifest(model_sha256: str, n_features: int = TINY_FEATURES, masking: bool = False,
                  preprocessing: Optional[dict[str, Any]] = None, schema_version: int = 2) -> dict[str, Any]:
    """A manifest with the keys and shapes the exporter writes (trimmed to what the runtime reads)."""
    if preprocessing is None:
        preprocessing = tiny_preprocessing(n_features)
    if schema_version >= 2 and preprocessing.get("type") == "standardize":
        preprocessing = {**preprocessing, "in_graph": True}
    return {
        "schema_version": schema_version,
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
                     seed: int = 0, masking: bool = False, preprocessing: Optional[dict[str, Any]] = None,
                     schema_version: int = 2, **manifest_kw) -> Path:
    """Write model.onnx + manifest.json into ``folder`` (created); return the folder.

    ``schema_version`` 2 (current): the graph scales its raw input; 1: the old layout, a graph that
    takes standardized features and the scaling only in the manifest (runtimes refuse it).
    """
    from pipeline import artifact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / artifact.MODEL_FILE
    prep = tiny_preprocessing(n_features) if preprocessing is None else preprocessing
    proto = tiny_model_proto(n_features, units, seed, raw_input=prep if schema_version >= 2 else None,
                             masking=masking)
    model_path.write_bytes(proto.SerializeToString())
    manifest = tiny_manifest(artifact.sha256_file(model_path), n_features, masking, prep, schema_version,
                             **manifest_kw)
    artifact.write_manifest(folder, manifest)
    return folder
