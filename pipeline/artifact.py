"""The exported-artifact contract: file names, manifest schema, integrity.

Owns: what an exported folder contains and how manifest.json is read, checked and
written; the graph input/output names every producer and consumer shares (the exporter's
pipeline.export.native imports them from here). Imports: standard library and pipeline.decision
(numpy) only (the runtime depends on it; keep it light).
Reads/writes: ``<dir>/manifest.json``; hashes ``<dir>/model.onnx``.

An exported folder holds:
    model.onnx       the classifier graph, RAW input (batch, time, features) [+ lengths (batch,) int64
                     for a variable-length model] -> probability (batch, 1) for a binary task or
                     probabilities (batch, k) for multiclass / multilabel (docs/artifact.md, schema 3);
                     every graph does its feature scaling itself and carries its metadata (task,
                     class names, decision rule, ...) in ``metadata_props``: it runs without this
                     manifest in any ONNX runtime
    model_unrolled.onnx  optional: the same classifier unrolled over the trained length (faster for
                     large batches of exactly that length; see manifest "unrolled")
    stream.onnx      optional: one step-chunk of the recurrence with explicit hidden states
    manifest.json    everything needed to use and trust model.onnx (see ``REQUIRED_KEYS``); its
                     decision fields (``DECISION_FIELDS``) must equal what model.onnx's metadata_props
                     say: the graph is covered by the manifest's sha256, the manifest is not, so the
                     graph is the one source of truth and an edited manifest is refused
                     (``check_manifest_matches_graph``)
    reference.npz    raw inputs with Keras' probabilities, for re-checking anywhere
    report.md        human-readable build and verification report
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from pipeline.decision import TASKS, check_decision
from pipeline.errors import ArtifactError, IntegrityError

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "MODEL_FILE",
    "STREAM_MODEL_FILE",
    "UNROLLED_MODEL_FILE",
    "MANIFEST_FILE",
    "REFERENCE_FILE",
    "REPORT_FILE",
    "REQUIRED_KEYS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OUTPUTS_NAME",
    "output_name",
    "sha256_file",
    "read_manifest",
    "write_manifest",
    "verify_model_hash",
    "checked_file_name",
    "DECISION_FIELDS",
    "check_manifest_matches_graph",
]

# 1: graphs took standardized features; the runtime scaled raw ones with manifest "preprocessing".
# 2: every graph takes raw features and scales them itself ("preprocessing": {..., "in_graph": true}).
# 3: tasks (binary, multiclass, multilabel) with a "decision" rule, a (batch, k) "probabilities" output
#    for k classes, and variable-length graphs taking a "lengths" int64 (batch,) input (docs/artifact.md).
SCHEMA_VERSION = 3
SUPPORTED_SCHEMA_VERSIONS = (3,)
# Older folders are refused, with how to re-export; the messages are checked by tests/runtime/test_integrity.py.
SCALING_OUTSIDE_GRAPH_SCHEMAS = (1,)  # their model.onnx gives wrong answers on raw features
PADDING_BY_VALUE_SCHEMAS = (2,)       # all-zero steps meant padding; no task, decision or lengths input
REEXPORT_HINT = ("re-export it with this version: gru-build (the default task or your data), or gru-export "
                 "MODEL_FILE --sample-data FILE (pipeline.packaging.export_keras_model(model, sample, out)) for a "
                 "Keras model you trained (pipeline.packaging.export_model for a training run's model)")

INPUT_NAME = "x"                # graph input of every model file: (batch, time, F) raw features
OUTPUT_NAME = "probability"     # a binary classifier's output: (batch, 1) p(class 1)
OUTPUTS_NAME = "probabilities"  # k classes (multiclass or multilabel): (batch, k), in class_names order


def output_name(width: int) -> str:
    """The graph output's name for a head of ``width`` probabilities (docs/artifact.md)."""
    return OUTPUT_NAME if width == 1 else OUTPUTS_NAME


MODEL_FILE = "model.onnx"
STREAM_MODEL_FILE = "stream.onnx"
UNROLLED_MODEL_FILE = "model_unrolled.onnx"
MANIFEST_FILE = "manifest.json"
REFERENCE_FILE = "reference.npz"
REPORT_FILE = "report.md"

# Top-level keys every manifest must have; the runtime refuses a manifest without them.
REQUIRED_KEYS = (
    "schema_version",
    "model",          # {"file", "sha256", "opset", "backend", "ops"}
    "input",          # {"name", "dtype", "shape", "kind"}  shape uses names for dynamic axes
    "output",         # {"name", "dtype", "shape"}
    "preprocessing",  # {"type": "standardize", "mean": [...], "std": [...], "in_graph": true} or {"type": "none"}
    "masking",        # {"enabled", "mask_value" (a user's Masking value, else null), "padding": "lengths"}
    "task",           # "binary" | "multiclass" | "multilabel" (pipeline.decision.TASKS)
    "class_names",    # [name of class 0, ..., name of class k-1]; two for a binary task
    "decision",       # {"rule": "threshold", "threshold"} | {"rule": "argmax"} | {"rule": "thresholds", ...}
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``manifest.json`` of an exported folder.

    Raises:
        ArtifactError: folder or manifest missing, not JSON, unknown schema version,
            or a required key missing.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ArtifactError(f"model folder not found: expected a directory, got {str(folder)!r}")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{MANIFEST_FILE} not found in {str(folder)!r}: expected an exported model folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not a readable JSON manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version in SCALING_OUTSIDE_GRAPH_SCHEMAS and type(version) is int:
        raise ArtifactError(
            f"{path}: unsupported manifest schema_version {version}: its model.onnx takes standardized features "
            f"(the scaling lived in the manifest) and this runtime feeds raw ones to graphs that scale inside; "
            f"{REEXPORT_HINT}"
        )
    if version in PADDING_BY_VALUE_SCHEMAS and type(version) is int:
        raise ArtifactError(
            f"{path}: unsupported manifest schema_version {version}: it predates tasks, decision rules and the "
            f"lengths input (schema {SCHEMA_VERSION}; its masked graphs read all-zero steps as padding); "
            f"{REEXPORT_HINT}"
        )
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        raise ArtifactError(
            f"{path}: unsupported manifest schema_version {version!r}; this runtime supports {supported}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path}: manifest is missing required keys {missing}")
    _check_structure(manifest, path)
    return manifest


def _check_structure(m: dict[str, Any], path: Path) -> None:
    """Refuse a manifest whose entries have the wrong types (the runtime would crash on them)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ArtifactError(f"{path}: invalid manifest: expected {what}")

    for key in ("model", "input", "output", "preprocessing", "masking"):
        need(isinstance(m[key], dict), f"'{key}' to be an object, got {type(m[key]).__name__}")
    model, inp, out = m["model"], m["input"], m["output"]
    need(_is_bare_file_name(model.get("file", MODEL_FILE)),
         f"model.file to be a file name inside the folder, got {model.get('file')!r}")
    need(isinstance(model.get("sha256"), str) and len(model["sha256"]) == 64,
         f"model.sha256 to be a 64-character hex digest, got {model.get('sha256')!r}")
    for what, entry in (("input", inp), ("output", out)):
        need(isinstance(entry.get("name"), str) and entry["name"] != "", f"{what}.name to be a non-empty string")
        need(isinstance(entry.get("shape"), list), f"{what}.shape to be a list")
    shape = inp["shape"]
    if inp.get("kind", "features") == "features":
        need(len(shape) == 3 and isinstance(shape[2], int) and not isinstance(shape[2], bool) and shape[2] >= 1,
             f"input.shape [batch, time, features>=1], got {shape}")
        n_feat = shape[2]
        prep = m["preprocessing"]
        need(prep.get("type", "none") in ("none", "standardize"),
             f"preprocessing.type 'standardize' or 'none', got {prep.get('type')!r}")
        if prep.get("type") == "standardize":
            for key in ("mean", "std"):
                vals = prep.get(key)
                need(isinstance(vals, list) and len(vals) == n_feat
                     and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals),
                     f"preprocessing.{key} to be {n_feat} finite numbers (one per feature)")
            need(all(v > 0 for v in prep["std"]), "preprocessing.std values > 0")
        need(prep.get("type", "none") == "none" or prep.get("in_graph") is True,
             f"preprocessing.in_graph true (schema {SCHEMA_VERSION} graphs scale their raw input themselves), "
             f"got {prep.get('in_graph')!r}")
    need(inp.get("lengths") is None or (isinstance(inp["lengths"], str) and inp["lengths"] != ""),
         f"input.lengths to be the name of the lengths input or null, got {inp.get('lengths')!r}")
    masking = m["masking"]
    mv = masking.get("mask_value")
    need(mv is None or (isinstance(mv, (int, float)) and not isinstance(mv, bool) and math.isfinite(mv)),
         f"masking.mask_value to be a finite number or null, got {mv!r}")
    need(not masking.get("enabled") or inp.get("lengths") is not None,
         "input.lengths to name the lengths input of a masked (variable-length) model, got null")
    task, names = m["task"], m["class_names"]
    need(task in TASKS, f"task to be one of {', '.join(TASKS)}, got {task!r}")
    need(isinstance(names, list) and len(names) >= 2 and len(set(map(repr, names))) == len(names),
         f"class_names to be a list of at least two distinct names, got {names!r}")
    need(len(names) == 2 if task == "binary" else len(names) >= (3 if task == "multiclass" else 2),
         f"class_names to hold {'2' if task == 'binary' else 'at least 3' if task == 'multiclass' else 'at least 2'} "
         f"names for a {task} task, got {len(names)}")
    try:
        check_decision(m["decision"], task, len(names))
    except ValueError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from None


def _is_bare_file_name(name: Any) -> bool:
    """A bare file name inside the folder: never an absolute path or '..' (path traversal)."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def checked_file_name(name: Any, what: str) -> str:
    """``name`` if it is a bare file name inside the artifact folder, else ArtifactError."""
    if not _is_bare_file_name(name):
        raise ArtifactError(f"invalid manifest: expected {what} to be a file name inside the folder, got {name!r}")
    return name


def write_manifest(model_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (sorted keys, 2-space indent) and return its path."""
    path = Path(model_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_model_hash(model_path: str | os.PathLike, expected_sha256: str) -> None:
    """Raise ``IntegrityError`` unless the file's sha256 equals ``expected_sha256``."""
    try:
        actual = sha256_file(model_path)
    except OSError as exc:
        raise ArtifactError(f"cannot read model file {str(model_path)!r}: {exc.strerror or exc}") from None
    if actual != expected_sha256:
        raise IntegrityError(
            f"{model_path}: sha256 mismatch, manifest expects {expected_sha256[:16]}..., "
            f"file has {actual[:16]}...; the model was modified or damaged, re-export it"
        )


# ---------------------------------------------------------------------------- manifest vs graph metadata
# The manifest entries that decide what the runtime answers (labels, input checks), each as the
# metadata_props key the exporter stamps it under (pipeline/export/metadata.py graph_metadata).
# The graph's copy is authoritative: model.onnx's bytes, metadata included, are what the sha256
# checks; manifest.json itself is not hashed.
DECISION_FIELDS = {
    "schema_version": "schema_version",
    "task": "task",
    "decision": "decision",
    "class_names": "class_names",
    "input.shape[2]": "features",
    "input.vocabulary_size": "vocabulary_size",
    "preprocessing": "preprocessing",
    "masking": "masking",
}
_JSON_PROPS = ("class_names", "decision", "preprocessing", "masking")
_TEXT_PROPS = ("task",)


_ABSENT = object()  # a key one side does not have


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _leaf_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: 0, 0.0, false and "0" all differ (labels print as they are written)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _first_difference(path: str, a: Any, b: Any) -> Optional[tuple[str, Any, Any]]:
    """``(path, a_part, b_part)`` of the first place two JSON values differ (into objects and equal-length
    lists, so the message names e.g. ``preprocessing.mean[3]``), or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}", a.get(key, _ABSENT), b.get(key, _ABSENT)
            diff = _first_difference(f"{path}.{key}", a[key], b[key])
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _first_difference(f"{path}[{i}]", x, y)
            if diff:
                return diff
        return None
    return None if _leaf_equal(a, b) else (path, a, b)


def _manifest_value(manifest: dict[str, Any], field: str) -> Any:
    inp = manifest["input"]
    if field == "input.shape[2]":
        return inp["shape"][2]
    if field == "input.vocabulary_size":
        return inp.get("vocabulary_size")
    return manifest[field]


def _graph_value(props: dict[str, str], key: str, model_file: str) -> Any:
    """A metadata_props value as the manifest would hold it (number, list or object)."""
    raw = props[key]
    try:
        if key in _JSON_PROPS:
            return json.loads(raw)
        if key in _TEXT_PROPS:
            return raw
        return int(raw)
    except (ValueError, TypeError):
        raise ArtifactError(f"{model_file}: metadata_props {key!r} is {raw[:80]!r}, not a valid value: the graph "
                            f"was not written by this exporter or is damaged; {REEXPORT_HINT}", field=key) from None


def check_manifest_matches_graph(manifest: dict[str, Any], props: dict[str, str], manifest_path: str,
                                 model_file: str) -> None:
    """Refuse a manifest whose decision fields disagree with the graph's ``metadata_props``.

    ``props`` are model.onnx's metadata_props (already sha256-checked against the manifest). A graph
    without them (not stamped by this exporter, e.g. hand-made test graphs) has nothing to compare:
    the manifest alone then decides. A key the graph does not carry is not compared.
    Raises:
        IntegrityError: naming the field, the manifest's value, the graph's value and how to fix it.
    """
    if "schema_version" not in props:
        return
    kind = manifest["input"].get("kind", "features")
    for field, key in DECISION_FIELDS.items():
        if key not in props or (field == "input.shape[2]" and kind != "features"):
            continue
        mine, theirs = _manifest_value(manifest, field), _graph_value(props, key, model_file)
        diff = _first_difference(field, mine, theirs)
        if diff:
            where, mine, theirs = diff
            raise IntegrityError(
                f"{manifest_path}: {where} is {_show(mine)} in {MANIFEST_FILE} but {_show(theirs)} in the "
                f"metadata_props of {model_file} ({key!r}), which the model sha256 covers and which is trusted "
                f"over the unhashed manifest: {MANIFEST_FILE} was edited or belongs to another export; re-export "
                f"the folder, or restore its {MANIFEST_FILE}", field=where)
