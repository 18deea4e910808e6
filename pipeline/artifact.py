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
    manifest.json    everything needed to use and trust model.onnx (see ``REQUIRED_KEYS``)
    reference.npz    raw inputs with Keras' probabilities, for re-checking anywhere
    report.md        human-readable build and verification report
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

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
