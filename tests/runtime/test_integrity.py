"""Damaged or untrusted artifacts are refused at load time with ArtifactError / IntegrityError."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline import artifact
from pipeline.errors import ArtifactError, IntegrityError
from pipeline.runtime import Predictor


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    folder = tmp_path / "exported"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _save(folder, manifest):
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _refused(folder, error=ArtifactError, match=None):
    with pytest.raises(error, match=match) as info:
        Predictor.load(folder)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_good_artifact_loads(model_dir):
    p = Predictor.load(model_dir)
    assert p.predict_proba(np.zeros((2, 3, 3), np.float32)).shape == (2,)


def test_sha256_mismatch(model_dir):
    raw = bytearray((model_dir / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (model_dir / "model.onnx").write_bytes(bytes(raw))
    msg = _refused(model_dir, IntegrityError, "sha256 mismatch")
    assert "re-export" in msg


def test_manifest_hash_edited(model_dir):
    m = _manifest(model_dir)
    m["model"]["sha256"] = "0" * 64
    _save(model_dir, m)
    _refused(model_dir, IntegrityError)


@pytest.mark.parametrize("version", [0, 4, "3", None, 1.5])
def test_unknown_schema_version(model_dir, version):
    m = _manifest(model_dir)
    m["schema_version"] = version
    _save(model_dir, m)
    msg = _refused(model_dir, ArtifactError, "unsupported manifest schema_version")
    supported = ", ".join(str(v) for v in artifact.SUPPORTED_SCHEMA_VERSIONS)
    assert msg.endswith(f"this runtime supports {supported}")


@pytest.mark.parametrize("damage", ["truncated", "not onnx", "empty", "zeros"])
def test_unparseable_model_with_matching_hash(model_dir, damage):
    """The hash matches (re-recorded), so only parsing can catch it."""
    path = model_dir / "model.onnx"
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 3], "not onnx": b"this is not a protobuf \xff\x00" * 20,
                      "empty": b"", "zeros": bytes(len(raw))}[damage])
    m = _manifest(model_dir)
    m["model"]["sha256"] = artifact.sha256_file(path)
    _save(model_dir, m)
    with pytest.raises(ArtifactError) as info:
        Predictor.load(model_dir)
    # the bytes match the recorded hash: refused as an unloadable model, not as an integrity failure
    assert type(info.value) is ArtifactError, (type(info.value).__name__, str(info.value))
    assert str(info.value).startswith(f"{model_dir / 'model.onnx'} is not a loadable ONNX model"), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["input"].update(name="input_1"), "manifest names input"),
    (lambda m: m["output"].update(name="prob"), "manifest names input"),
    (lambda m: (m["input"].update(shape=["batch", "time", 5]),
                m["preprocessing"].update(mean=[0.0] * 5, std=[1.0] * 5)), "disagrees with the graph"),
    (lambda m: m["input"].update(shape=["batch", "time", 5]), "preprocessing.mean"),
    (lambda m: m["input"].update(shape=["batch", 7, 3]), "disagrees with the graph"),
    (lambda m: m["input"].update(shape=["batch", 3]), "input.shape"),
    (lambda m: m["preprocessing"].update(mean=[0.0]), "preprocessing.mean"),
    (lambda m: m["preprocessing"].update(std=[1.0, 0.0, 1.0]), "preprocessing.std"),
    (lambda m: m["preprocessing"].update(type="minmax"), "preprocessing.type"),
    (lambda m: m.update(decision={"rule": "threshold", "threshold": "high"}), "decision: expected thresholds"),
    (lambda m: m.update(decision={"rule": "threshold", "threshold": 1.0}), "decision: expected thresholds in"),
    (lambda m: m.update(decision={"rule": "argmax"}), "decision: a binary model expected the rule 'threshold'"),
    (lambda m: m.update(task="regression"), "task to be one of binary, multiclass, multilabel"),
    (lambda m: m.update(task="multiclass"), "class_names to hold at least 3 names for a multiclass task"),
    (lambda m: m.update(class_names=["only"]), "class_names"),
    (lambda m: m.update(class_names=["a", "a"]), "distinct names"),
    (lambda m: m["input"].update(lengths="lengths"), "manifest names inputs"),
    (lambda m: m["input"].update(lengths=3), "input.lengths"),
    (lambda m: m["masking"].update(mask_value="zero"), "masking.mask_value"),
    (lambda m: m.update(input=[]), "'input' to be an object"),
    (lambda m: m["input"].pop("name"), "input.name"),
    (lambda m: m["model"].pop("sha256"), "model.sha256"),
    (lambda m: m["model"].update(file="../../etc/passwd"), "model.file"),
    (lambda m: m["model"].update(file="/etc/passwd"), "model.file"),
    (lambda m: m["model"].update(file="missing.onnx"), "model file not found"),
    (lambda m: m.pop("decision"), "missing required keys"),
    (lambda m: m.pop("task"), "missing required keys"),
])
def test_manifest_disagrees_with_graph_or_is_malformed(model_dir, edit, match):
    m = _manifest(model_dir)
    edit(m)
    _save(model_dir, m)
    _refused(model_dir, ArtifactError, match)


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'{"schema_version": 1}'])
def test_unreadable_manifest(model_dir, content):
    (model_dir / "manifest.json").write_bytes(content)
    _refused(model_dir, ArtifactError)


def test_missing_folder_or_files(tmp_path, model_dir):
    _refused(tmp_path / "nope", ArtifactError, "model folder not found")
    (model_dir / "model.onnx").unlink()
    _refused(model_dir, ArtifactError, "model file not found")
    (model_dir / "manifest.json").unlink()
    _refused(model_dir, ArtifactError, "manifest.json not found")


def test_cli_exit_code_for_damaged_model(model_dir, tmp_path):
    from pipeline.runtime.cli import main

    np.save(tmp_path / "x.npy", np.zeros((1, 2, 3), np.float32))
    (model_dir / "model.onnx").write_bytes(b"garbage")
    assert main([str(model_dir), str(tmp_path / "x.npy")]) == 3


def test_schema_1_artifact_is_refused_with_how_to_reexport(tmp_path, tiny_model_factory):
    """A folder of the old schema (graph fed standardized features, scaling only in the manifest) would
    answer wrongly on raw features, so it is refused, and the message says how to re-export."""
    folder = tiny_model_factory(tmp_path / "old", schema_version=1)
    assert _manifest(folder)["schema_version"] == 1
    msg = _refused(folder, ArtifactError, "unsupported manifest schema_version 1")
    assert "standardized features" in msg and "re-export" in msg and "gru-build" in msg and "export_keras_model" in msg


def test_schema_2_artifact_is_refused_with_how_to_reexport(tmp_path, tiny_model_factory):
    """A schema-2 folder (threshold instead of task and decision; all-zero steps meant padding) is refused
    with the one-line re-export hint naming today's API and commands."""
    folder = tiny_model_factory(tmp_path / "old", schema_version=2)
    assert _manifest(folder)["schema_version"] == 2 and "threshold" in _manifest(folder)
    msg = _refused(folder, ArtifactError, "unsupported manifest schema_version 2")
    for part in ("lengths input", "re-export", "gru-build", "gru-export", "pipeline.packaging.export_keras_model",
                 "pipeline.packaging.export_model"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_k_class_manifest_checked_against_the_graph(tmp_path, tiny_model_factory, task):
    folder = tiny_model_factory(tmp_path / task, task=task)
    assert Predictor.load(folder).n_classes == 3
    m = _manifest(folder)
    m["class_names"] = ["a", "b", "c", "d"]  # the graph's output has 3 columns
    if task == "multilabel":
        m["decision"]["thresholds"].append(0.5)
    _save(folder, m)
    _refused(folder, ArtifactError, r"expected a graph output of width 4, got \['batch', 3\]")
    m["class_names"], m["decision"] = ["a", "b", "c"], {"rule": "thresholds", "thresholds": [0.5, 0.5]}
    _save(folder, m)
    _refused(folder, ArtifactError, "decision: " + ("expected 3 thresholds" if task == "multilabel" else
                                                    "a multiclass model expected the rule 'argmax'"))
