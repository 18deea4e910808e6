"""Metadata inside the graphs: what a consumer needs to use a model file without manifest.json.

Owns: the ``metadata_props`` and doc strings of every shipped graph (model.onnx, stream.onnx,
model_unrolled.onnx), the producer name/version fields, and the source model's hash.
Layer: export. Imports: hashlib, json, onnx (build stage only), pipeline. Reads/writes: the staged graph files
named by the manifest (rewritten in place; their manifest sha256 entries are updated).

Stamping happens after verification and changes no computation: ``stamp_graph`` checks that the
graph (nodes, initializers, inputs, outputs) serializes to the same bytes before and after, so the
verified numbers hold for the stamped file.

Keys written (all values are strings; JSON where structured)::

    schema_version, graph ("model" | "stream" | "unrolled"), input, output, padding, task,
    class_names (JSON), decision (JSON, docs/artifact.md), decision_source, timesteps, features,
    feature_names (JSON, when the data had them), preprocessing (JSON, "in_graph": true), masking
    (JSON), mask_value, lengths_input (variable-length model.onnx),
    vocabulary_size (token models), producer_name, producer_version, exporter,
    source_model_sha256, source_model_hashed, verified_against, verified_atol,
    verified_max_abs_error, states (JSON, stream.onnx)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline import __version__, artifact
from pipeline.errors import ExportError

__all__ = ["PRODUCER_NAME", "source_model_hash", "graph_metadata", "stamp_graph", "stamp_artifact"]

PRODUCER_NAME = "gru-pipeline"
SOURCE_HASHED = "sha256 of the Keras model's architecture JSON (model.to_json()) and weights (dtype, shape, bytes)"


def source_model_hash(model) -> str:
    """sha256 of a Keras model's architecture JSON and its weights, in order (see SOURCE_HASHED)."""
    digest = hashlib.sha256(model.to_json().encode("utf-8"))
    for w in model.get_weights():
        arr = np.ascontiguousarray(w)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def graph_metadata(manifest: dict[str, Any], graph: str) -> tuple[dict[str, str], str]:
    """(metadata_props, doc string) of one shipped graph, from the manifest (the one source of both)."""
    inp, out = manifest["input"], manifest["output"]
    F = inp["shape"][-1]
    names = manifest["class_names"]
    masking = manifest["masking"]
    prep = manifest["preprocessing"]
    T = manifest.get("timesteps_trained")
    if graph == "unrolled":
        time_axis = f"exactly {manifest['unrolled']['timesteps']} steps (this graph is unrolled over them)"
        verified = manifest["unrolled"]["verification"]["max_abs_error_vs_keras"]
    elif graph == "stream":
        time_axis = "any number of steps per call: one chunk of the sequence; pass the state outputs back as inputs"
        verified = manifest["stream"]["verification"]["max_abs_error_proba"]
    else:
        time_axis = "any length" + (f" (trained on {T})" if T else "")
        verified = manifest["equivalence"]["max_abs_error"]
    if inp.get("kind", "features") == "features":
        input_text = (f"{inp['name']}: float32 (batch, time, {F}) RAW features; the scaling "
                      f"({prep.get('type', 'none')}) is done inside this graph; time: {time_axis}")
    else:
        input_text = f"{inp['name']}: int64 (batch, time) token ids; time: {time_axis}"
    lengths_input = inp.get("lengths")
    if masking.get("enabled") and graph != "stream":
        padding = (f"right padding with lengths: feed {lengths_input} int64 (batch,), each row's real length "
                   "(1..time); whatever a row holds past its length is ignored, and no value means padding")
    elif masking.get("enabled"):
        padding = "none: every step given is real (a stream is never padded)"
    else:
        padding = "none: every step is real; run sequences of different lengths in separate calls"
    if manifest["task"] == "binary":
        output_text = f"{out['name']}: float32 (batch, 1) probability of class index 1, named {names[1]!r}"
        rule = (f"predict {names[1]!r} when it is >= {manifest['decision']['threshold']!r}, else {names[0]!r}")
    else:
        output_text = (f"{out['name']}: float32 (batch, {len(names)}) probability of each class, in the order of "
                       f"class_names ({manifest['task']})")
        rule = ("predict the class with the largest probability" if manifest["task"] == "multiclass" else
                "predict every class whose probability is >= its threshold in decision.thresholds")
    source = manifest.get("source_model") or {}
    own = manifest.get("source") or {}  # gru-export: the .keras file the model came from
    if own.get("sha256"):
        source = {"sha256": own["sha256"], "hashed": f"sha256 of the source file {own.get('file')!r}"}
    versions = manifest.get("versions") or {}
    props = {
        "schema_version": str(manifest["schema_version"]),
        "graph": graph,
        "input": input_text,
        "output": output_text,
        "padding": padding,
        "task": manifest["task"],
        "class_names": _dump(names),
        "decision": _dump(manifest["decision"]),
        "decision_source": str(manifest.get("decision_source", "")),
        "timesteps": str(T if graph != "unrolled" else manifest["unrolled"]["timesteps"]),
        "features": str(F),
        "preprocessing": _dump(prep),
        "masking": _dump(masking),
        "mask_value": (repr(float(masking["mask_value"])) if masking.get("mask_value") is not None
                       else "none (no value means padding)"),
        "producer_name": PRODUCER_NAME,
        "producer_version": __version__,
        "exporter": str(manifest["model"].get("backend")),
        "source_model_sha256": str(source.get("sha256", "")),
        "source_model_hashed": str(source.get("hashed", "")),
        "verified_against": f"Keras {versions.get('keras', '?')} (TensorFlow {versions.get('tensorflow', '?')}) "
                            f"with onnxruntime {versions.get('onnxruntime', '?')}",
        "verified_atol": repr(float(manifest["equivalence"]["atol"])),
        "verified_max_abs_error": repr(float(verified)),
    }
    if manifest.get("feature_names"):
        props["feature_names"] = _dump(list(manifest["feature_names"]))
    if inp.get("vocabulary_size") is not None:
        props["vocabulary_size"] = str(int(inp["vocabulary_size"]))
    if graph == "stream":
        props["states"] = _dump(manifest["stream"]["states"])
    elif lengths_input:
        props["lengths_input"] = lengths_input
    doc = (f"GRU {manifest['task']} classifier ({graph} graph) by {PRODUCER_NAME} {__version__}. Input "
           f"{props['input']}. Output {props['output']}; {rule}. "
           f"Padding: {padding}. Verified against {props['verified_against']}: max |difference| "
           f"{float(verified):.3g} <= {props['verified_atol']}. Everything else is in metadata_props.")
    return props, doc


def _computation(proto: onnx.ModelProto) -> bytes:
    """The graph's computation as bytes: everything but doc strings and metadata."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.doc_string = ""
    copy.graph.doc_string = ""
    for value in list(copy.graph.input) + list(copy.graph.output):
        value.doc_string = ""
    del copy.metadata_props[:]
    copy.producer_name = copy.producer_version = ""
    return copy.SerializeToString()


def stamp_graph(path: Path, props: dict[str, str], doc: str, input_doc: str, output_doc: str) -> str:
    """Write ``props`` and doc strings into the ONNX file at ``path``; return its new sha256.

    Raises:
        ExportError: stamping would change the computation (it never should).
    """
    proto = onnx.load(str(path))
    before = _computation(proto)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    proto.producer_name, proto.producer_version = PRODUCER_NAME, __version__
    proto.doc_string = proto.graph.doc_string = doc
    proto.graph.input[0].doc_string = input_doc
    proto.graph.output[0].doc_string = output_doc
    if _computation(proto) != before:
        raise ExportError(f"{path.name}: writing the metadata changed the graph")
    path.write_bytes(proto.SerializeToString())
    return artifact.sha256_file(path)


def stamp_artifact(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Stamp every graph the manifest ships; update its sha256 entries. Returns the files stamped."""
    folder = Path(folder)
    shipped = [("model", manifest["model"])]
    for graph in ("stream", "unrolled"):
        entry = manifest.get(graph) or {}
        if entry.get("supported") and (folder / entry["file"]).is_file():
            shipped.append((graph, entry))
    for graph, entry in shipped:
        props, doc = graph_metadata(manifest, graph)
        entry["sha256"] = stamp_graph(folder / entry["file"], props, doc, props["input"], props["output"])
    return [entry["file"] for _, entry in shipped]
