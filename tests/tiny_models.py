"""Tiny exported folders written directly with ``onnx.helper``: a GRU node graph + manifest.json
shaped like ``pipeline.packaging.exporter`` writes them (schema 3, docs/artifact.md), so tests need
neither TensorFlow, Keras nor a trained model. Shared by tests/runtime (through its conftest.py) and
tests/export.

Writing the graph needs the ``onnx`` package: a build dependency (the ``build`` extra), not part of
the runtime install, imported only inside the functions that build protos. Like every current
export, the graph takes raw features: what ``pipeline.export.scaling.embed_preprocessing`` puts in
front of the model is written here with onnx.helper like the rest of the tiny graph (no
pipeline.export module is imported; tests/export/test_self_contained.py checks
``embed_preprocessing`` itself):

    scaled = (x - mean) / std                                  a standardize entry
    real   = Range(0, time) < lengths[:, None]                 variable length: the ``lengths`` input
    padded = Where(real[..., None], scaled, pad_value)         past each length: the model's padding

and then, as the model's own Masking layer does, the steps not all equal to ``pad_value`` are
counted into the GRU's ``sequence_lens`` (right padding). Heads: ``binary`` Dense(1, sigmoid) ->
``probability`` (batch, 1); ``multiclass`` Dense(k) + Softmax and ``multilabel`` Dense(k, sigmoid)
-> ``probabilities`` (batch, k). A token model (``vocabulary_size``) takes ids (batch, time) int64 and
gathers the GRU's input rows from an Embedding table (vocabulary_size, F) instead; no scaling, fixed
length. ``write_tiny_model`` makes variants (other feature count, task,
variable length with or without a user's mask value, a streaming graph, a broken manifest, old
schemas...) in any folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

TINY_FEATURES = 3
TINY_UNITS = 4
INPUT_NAME, OUTPUT_NAME, OUTPUTS_NAME, LENGTHS_NAME = "x", "probability", "probabilities", "lengths"
TASK_CLASSES = {"binary": 2, "multiclass": 3, "multilabel": 3}  # default class counts of the tiny heads


def _weights(F: int, H: int, width: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W": (rng.standard_normal((1, 3 * H, F)) * 0.5).astype(np.float32),
        "R": (rng.standard_normal((1, 3 * H, H)) * 0.5).astype(np.float32),
        "B": (rng.standard_normal((1, 6 * H)) * 0.1).astype(np.float32),
        "dense_w": rng.standard_normal((H, width)).astype(np.float32),
        "dense_b": (0.1 * np.arange(1, width + 1)).astype(np.float32),
    }


def _graph(n_features: int, units: int, seed: int, input_name: str, raw_input: Optional[dict[str, Any]],
           masking: bool, pad_value: float, task: str, n_classes: int, stream: bool,
           vocabulary_size: Optional[int] = None):
    """(nodes, initializers, inputs, outputs) of the batch graph, or of the stream graph (``stream``)."""
    from onnx import TensorProto, helper, numpy_helper

    H, F = units, n_features
    width = 1 if task == "binary" else n_classes
    w = _weights(F, H, width, seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", "time", F])]
    nodes, current = [], input_name
    if vocabulary_size:  # ids (batch, time) -> Embedding rows (batch, time, F)
        table = np.random.default_rng(seed + 1).standard_normal((vocabulary_size, F)).astype(np.float32)
        inits.append(numpy_helper.from_array(table, "embedding"))
        inputs = [helper.make_tensor_value_info(input_name, TensorProto.INT64, ["batch", "time"])]
        nodes.append(helper.make_node("Gather", ["embedding", input_name], ["embedded"], axis=0))
        current = "embedded"
    if raw_input is not None and raw_input.get("type") == "standardize":
        inits += [numpy_helper.from_array(np.asarray(raw_input["mean"], np.float32), "mean"),
                  numpy_helper.from_array(np.asarray(raw_input["std"], np.float32), "std")]
        nodes += [helper.make_node("Sub", [input_name, "mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "std"], ["scaled"])]
        current = "scaled"
    gru_inputs = ["x_tbf", "W", "R", "B"]
    if masking and not stream:  # the lengths input, then the model's own Masking -> sequence_lens
        inputs.append(helper.make_tensor_value_info(LENGTHS_NAME, TensorProto.INT64, ["batch"]))
        inits += [numpy_helper.from_array(np.array(1, np.int64), "time_axis"),
                  numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
                  numpy_helper.from_array(np.array(1, np.int64), "one_i"),
                  numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                  numpy_helper.from_array(np.array([2], np.int64), "axis2"),
                  numpy_helper.from_array(np.array(pad_value, np.float32), "pad_value")]
        nodes += [helper.make_node("Shape", [input_name], ["shape"]),
                  helper.make_node("Gather", ["shape", "time_axis"], ["time"], axis=0),
                  helper.make_node("Range", ["zero_i", "time", "one_i"], ["steps"]),            # (T,)
                  helper.make_node("Unsqueeze", [LENGTHS_NAME, "axis1"], ["lengths_b1"]),       # (B, 1)
                  helper.make_node("Less", ["steps", "lengths_b1"], ["real_bt"]),               # (B, T)
                  helper.make_node("Unsqueeze", ["real_bt", "axis2"], ["real"]),                # (B, T, 1)
                  helper.make_node("Where", ["real", current, "pad_value"], ["padded"]),        # (B, T, F)
                  # Masking(pad_value): a step is kept unless every feature equals the pad value
                  helper.make_node("Equal", ["padded", "pad_value"], ["is_pad"]),
                  helper.make_node("Not", ["is_pad"], ["not_pad"]),
                  helper.make_node("Cast", ["not_pad"], ["not_pad_f"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMax", ["not_pad_f"], ["kept_f"], axes=[2], keepdims=0),  # (B, T)
                  helper.make_node("ReduceSum", ["kept_f", "axis1"], ["count_f"], keepdims=0),   # (B,)
                  helper.make_node("Cast", ["count_f"], ["seq_lens"], to=TensorProto.INT32)]
        current = "padded"
        gru_inputs.append("seq_lens")
    if stream:
        gru_inputs += ["", "h_in_0"]
        inputs.append(helper.make_tensor_value_info("h_in_0", TensorProto.FLOAT, [1, "batch", H]))
    out_name = OUTPUT_NAME if width == 1 else OUTPUTS_NAME
    nodes += [
        helper.make_node("Transpose", [current], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node("GRU", gru_inputs, ["", "h_last"], hidden_size=H, linear_before_reset=1),
        helper.make_node("Squeeze", ["h_last", "axes0"], ["h"]),
        helper.make_node("Gemm", ["h", "dense_w", "dense_b"], ["logit"]),
        helper.make_node("Softmax" if task == "multiclass" else "Sigmoid", ["logit"], [out_name],
                         **({"axis": -1} if task == "multiclass" else {})),
    ]
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", width])]
    if stream:
        nodes.append(helper.make_node("Identity", ["h_last"], ["h_out_0"]))
        outputs.append(helper.make_tensor_value_info("h_out_0", TensorProto.FLOAT, [1, "batch", H]))
    return nodes, inits, inputs, outputs


def tiny_model_proto(n_features: int = TINY_FEATURES, units: int = TINY_UNITS, seed: int = 0,
                     input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                     raw_input: Optional[dict[str, Any]] = None, masking: bool = False, pad_value: float = 0.0,
                     task: str = "binary", n_classes: Optional[int] = None, stream: bool = False,
                     vocabulary_size: Optional[int] = None):
    """ONNX graph x (batch, time, F) [, lengths (batch,)] -> GRU -> Dense head (see the module docstring).

    ``raw_input``: a standardize entry whose scaling the graph does itself first; ``masking``: the
    variable-length form with the ``lengths`` input, padding with ``pad_value`` past each length;
    ``stream``: the streaming form (no lengths; the GRU state in ``h_in_0`` and out ``h_out_0``).
    ``output_name`` is only for the binary head (tests of misnamed outputs); ``vocabulary_size``: a token
    model, ids (batch, time) int64 through an Embedding table.
    """
    import onnx
    from onnx import helper

    n_classes = n_classes or TASK_CLASSES[task]
    nodes, inits, inputs, outputs = _graph(n_features, units, seed, input_name, raw_input, masking, pad_value,
                                           task, n_classes, stream, vocabulary_size)
    if task == "binary" and output_name != OUTPUT_NAME:
        nodes[-1 if not stream else -2].output[0] = output_name
        outputs[0].name = output_name
    graph = helper.make_graph(nodes, "tiny_gru_stream" if stream else "tiny_gru", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_preprocessing(n_features: int = TINY_FEATURES) -> dict[str, Any]:
    return {"type": "standardize", "mean": [0.25 * (j + 1) for j in range(n_features)],
            "std": [0.5 + 0.25 * j for j in range(n_features)]}


def tiny_decision(task: str, n_classes: int) -> dict[str, Any]:
    """The manifest ``decision`` entry of the tiny heads (as pipeline.decision.decision_entry writes it)."""
    if task == "binary":
        return {"rule": "threshold", "threshold": 0.5}
    if task == "multiclass":
        return {"rule": "argmax"}
    return {"rule": "thresholds", "thresholds": [0.3 + 0.1 * j for j in range(n_classes)]}


def tiny_manifest(model_sha256: str, n_features: int = TINY_FEATURES, masking: bool = False,
                  preprocessing: Optional[dict[str, Any]] = None, schema_version: int = 3,
                  task: str = "binary", class_names: Optional[list] = None,
                  mask_value: Optional[float] = None) -> dict[str, Any]:
    """A manifest with the keys and shapes the exporter writes (trimmed to what the runtime reads)."""
    if preprocessing is None:
        preprocessing = tiny_preprocessing(n_features)
    if schema_version >= 2 and preprocessing.get("type") == "standardize":
        preprocessing = {**preprocessing, "in_graph": True}
    names = list(class_names) if class_names is not None else (
        [0, 1] if task == "binary" else [f"c{j}" for j in range(TASK_CLASSES[task])])
    width = 1 if task == "binary" else len(names)
    manifest = {
        "schema_version": schema_version,
        "model": {"file": "model.onnx", "sha256": model_sha256, "opset": 17, "backend": "native",
                  "fallback_reason": None, "ops": ["GRU", "Gemm", "Sigmoid", "Squeeze", "Transpose"]},
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", "time", n_features], "kind": "features",
                  "lengths": LENGTHS_NAME if masking else None},
        "output": {"name": OUTPUT_NAME if width == 1 else OUTPUTS_NAME, "dtype": "float32", "shape": ["batch", width],
                   "meaning": "probability of class 1" if width == 1 else f"probability of each class ({task})"},
        "preprocessing": preprocessing,
        "masking": {"enabled": masking, "mask_value": mask_value if masking else None,
                    "padding": "lengths" if masking else None},
        "task": task,
        "class_names": names,
        "decision": tiny_decision(task, len(names)),
        "decision_source": "fixed",
        "seed": 0,
        "versions": {"pipeline": "test"},
    }
    if schema_version < 3:  # the old layout: threshold instead of task and decision, no lengths input
        for key in ("task", "decision", "decision_source"):
            manifest.pop(key)
        manifest["input"].pop("lengths")
        manifest.update(threshold=0.5, threshold_source="fixed")
        manifest["masking"] = {"enabled": masking, "mask_value": 0.0 if masking else None,
                               "padding": "right" if masking else None}
    return manifest


def write_tiny_model(folder: str | os.PathLike, n_features: int = TINY_FEATURES, units: int = TINY_UNITS,
                     seed: int = 0, masking: bool = False, preprocessing: Optional[dict[str, Any]] = None,
                     schema_version: int = 3, task: str = "binary", class_names: Optional[list] = None,
                     mask_value: Optional[float] = None, stream: bool = False,
                     vocabulary_size: Optional[int] = None, **manifest_kw) -> Path:
    """Write model.onnx + manifest.json (and stream.onnx with ``stream``) into ``folder`` (created); return it.

    ``masking``: a variable-length model (the ``lengths`` input); ``mask_value``: a user's own
    Masking value (the graph pads with it and the manifest names it; None: a gru-build model that
    pads with 0 on the scaled values and whose manifest has mask_value null). ``schema_version`` 3
    (current); 2: the manifest of the previous layout; 1: a graph that takes standardized
    features, the scaling only in the manifest (runtimes refuse both). ``vocabulary_size``: a token
    model (ids in [0, vocabulary_size); no preprocessing, no lengths).
    """
    from pipeline import artifact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / artifact.MODEL_FILE
    prep = tiny_preprocessing(n_features) if preprocessing is None else preprocessing
    if vocabulary_size:
        prep = {"type": "none"}
    n_classes = len(class_names) if class_names is not None else TASK_CLASSES[task]
    proto_kw = dict(raw_input=prep if schema_version >= 2 else None, task=task, n_classes=n_classes,
                    pad_value=0.0 if mask_value is None else mask_value, vocabulary_size=vocabulary_size)
    proto = tiny_model_proto(n_features, units, seed, masking=masking, **proto_kw)
    model_path.write_bytes(proto.SerializeToString())
    manifest = tiny_manifest(artifact.sha256_file(model_path), n_features, masking, prep, schema_version,
                             task=task, class_names=class_names, mask_value=mask_value, **manifest_kw)
    if vocabulary_size:
        manifest["input"].update(dtype="int64", shape=["batch", "time"], kind="tokens", vocabulary_size=vocabulary_size)
    if stream:
        path = folder / artifact.STREAM_MODEL_FILE
        path.write_bytes(tiny_model_proto(n_features, units, seed, stream=True, **proto_kw).SerializeToString())
        manifest["stream"] = {"supported": True, "file": artifact.STREAM_MODEL_FILE,
                              "sha256": artifact.sha256_file(path), "input": INPUT_NAME,
                              "output": manifest["output"]["name"],
                              "states": [{"input": "h_in_0", "output": "h_out_0", "shape": [1, units]}]}
    artifact.write_manifest(folder, manifest)
    return folder
