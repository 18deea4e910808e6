"""One source of truth for the decision fields: model.onnx's metadata_props (covered by the model sha256
the manifest records) over manifest.json (not hashed). A manifest.json edited after export (task,
decision rule, class names, input spec, scaling, masking) is refused at Predictor.load with one line naming the field,
both values and how to fix it; the untouched copy loads and answers as the original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import artifact
from pipeline.errors import ArtifactError, IntegrityError
from pipeline.runtime import Predictor
from pipeline.runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported"
FIX = "re-export the folder, or restore its manifest.json"


@pytest.fixture
def folder(tmp_path) -> Path:
    dst = tmp_path / "exported"
    shutil.copytree(EXPORTED, dst)
    return dst


def _edit(folder: Path, change) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    return m


def _set_prep(m, key, i, value):
    m["preprocessing"][key][i] = value


# edit of manifest.json, the field the refusal names, the manifest's and the graph's value as shown
DECISION_EDITS = {
    "threshold": (lambda m: m["decision"].update(threshold=0.3), "decision.threshold", "0.3", "0.5", "decision"),
    "rule": (lambda m: m.update(decision={"rule": "threshold", "threshold": 0.75}), "decision.threshold", "0.75", "0.5",
             "decision"),
    "class names renamed": (lambda m: m.update(class_names=["no", "yes"]), "class_names[0]", '"no"', "0", "class_names"),
    "class names swapped": (lambda m: m.update(class_names=[1, 0]), "class_names[0]", "1", "0", "class_names"),
    "class names as text": (lambda m: m.update(class_names=["0", "1"]), "class_names[0]", '"0"', "0", "class_names"),
    "scaling mean": (lambda m: _set_prep(m, "mean", 3, 0.25), "preprocessing.mean[3]", "0.25",
                     "2.2767058908357285e-05", "preprocessing"),
    "scaling std": (lambda m: _set_prep(m, "std", 0, 2.0), "preprocessing.std[0]", "2.0", "1.2264947891235352",
                    "preprocessing"),
    "scaling removed": (lambda m: m.update(preprocessing={"type": "none"}), "preprocessing.in_graph", "absent", "true",
                        "preprocessing"),
    "mask value": (lambda m: m["masking"].update(mask_value=-1.0), "masking.mask_value", "-1.0", "null", "masking"),
}


@pytest.mark.parametrize("edit", list(DECISION_EDITS))
def test_edited_decision_field_is_refused_naming_both_values(folder, edit):
    change, field, mine, theirs, key = DECISION_EDITS[edit]
    _edit(folder, change)
    with pytest.raises(IntegrityError) as info:
        Predictor.load(folder)
    assert str(info.value) == (
        f"{folder / 'manifest.json'}: {field} is {mine} in manifest.json but {theirs} in the metadata_props of "
        f"model.onnx ({key!r}), which the model sha256 covers and which is trusted over the unhashed manifest: "
        f"manifest.json was edited or belongs to another export; {FIX}")
    assert info.value.field == field


# edits of the input spec (name, T, F, dtype): checked against the graph's own input
INPUT_EDITS = {
    "name": (lambda m: m["input"].update(name="inputs"), "manifest names inputs ['inputs']", "input.name"),
    "T fixed": (lambda m: m["input"].update(shape=["batch", 50, 8]),
                "manifest input shape ['batch', 50, 8] disagrees with the graph's ['batch', 'time', 8]", "input.shape"),
    "F": (lambda m: (m["input"].update(shape=["batch", "time", 7]), m["preprocessing"].update(
        mean=m["preprocessing"]["mean"][:7], std=m["preprocessing"]["std"][:7])),
          "manifest input shape ['batch', 'time', 7] disagrees with the graph's ['batch', 'time', 8]", "input.shape"),
    "dtype": (lambda m: m["input"].update(dtype="float64"),
              "manifest input dtype 'float64' disagrees with the graph's 'float32'", "input.dtype"),
    "kind": (lambda m: m["input"].update(kind="tokens", vocabulary_size=10),
             "manifest input kind 'tokens' (fed as int64) disagrees with the graph's input dtype 'float32'", "input.kind"),
}


@pytest.mark.parametrize("edit", list(INPUT_EDITS))
def test_edited_input_spec_is_refused(folder, edit):
    change, start, field = INPUT_EDITS[edit]
    _edit(folder, change)
    with pytest.raises(ArtifactError) as info:
        Predictor.load(folder)
    msg = str(info.value)
    assert msg.startswith(start) and "\n" not in msg, msg
    assert msg.endswith("re-export the folder as a whole"), msg
    assert info.value.field == field


def test_unrolled_timesteps_edited_is_refused_when_that_graph_opens(folder):
    _edit(folder, lambda m: m["unrolled"].update(timesteps=40))
    p = Predictor.load(folder, graph="unrolled", fused=False)
    X = np.ones((2, 40, 8), np.float32)
    with pytest.raises(ArtifactError) as info:
        p.predict_proba(X)
    assert str(info.value) == ("manifest unrolled.timesteps 40 disagrees with the time axis 50 of model_unrolled.onnx; "
                               "re-export the folder as a whole")
    assert info.value.field == "unrolled.timesteps"


def test_untouched_copy_and_non_decision_edits_load(folder):
    """The committed folder's manifest agrees with its graph; entries that decide nothing may change."""
    X = np.load(EXPORTED / "reference.npz")["X"][:5]
    want = Predictor.load(EXPORTED).predict_proba(X)
    np.testing.assert_array_equal(Predictor.load(folder).predict_proba(X), want)
    _edit(folder, lambda m: (m.update(decision_source="edited", seed=7), m["report"].update(file="other.md")))
    p = Predictor.load(folder)
    assert p.threshold == 0.5 and p.class_names == [0, 1]
    np.testing.assert_array_equal(p.predict_proba(X), want)


def test_gru_predict_exits_3_with_one_line(folder, tmp_path, capsys):
    _edit(folder, lambda m: m["decision"].update(threshold=0.9))
    np.save(tmp_path / "x.npy", np.load(EXPORTED / "reference.npz")["X"][:2])
    capsys.readouterr()
    assert main([str(folder), str(tmp_path / "x.npy")]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"gru-predict: error: {folder / 'manifest.json'}: decision.threshold is 0.9 in manifest.json "
                          "but 0.5 ")


def test_edited_task_is_refused(folder):
    """A binary graph relabelled multi-label: the graph's output width (1) cannot carry 2 classes."""
    _edit(folder, lambda m: m.update(task="multilabel", decision={"rule": "thresholds", "thresholds": [0.5, 0.5]}))
    with pytest.raises(ArtifactError, match=r"a multilabel model with 2 classes expected a graph output of width 2"):
        Predictor.load(folder)
    m = json.loads((EXPORTED / "manifest.json").read_text())
    with pytest.raises(IntegrityError, match=r'task is "binary" in manifest.json but "multilabel" '):
        artifact.check_manifest_matches_graph(m, {"schema_version": "3", "task": "multilabel"}, "manifest.json",
                                              "model.onnx")


def test_check_function_directly():
    """Unit level: a graph without metadata (not stamped by the exporter) has nothing to compare; a malformed
    stamped value is refused; a key the graph lacks is not compared."""
    m = json.loads((EXPORTED / "manifest.json").read_text())
    artifact.check_manifest_matches_graph(m, {}, "manifest.json", "model.onnx")  # unstamped: nothing to compare
    stamped = {"schema_version": "3", "decision": json.dumps(m["decision"])}
    artifact.check_manifest_matches_graph(m, stamped, "manifest.json", "model.onnx")
    with pytest.raises(IntegrityError, match=r"decision.threshold is 0.5 in manifest.json but 0.25 "):
        artifact.check_manifest_matches_graph(m, {**stamped, "decision": '{"rule": "threshold", "threshold": 0.25}'},
                                              "manifest.json", "model.onnx")
    with pytest.raises(ArtifactError, match=r"model.onnx: metadata_props 'class_names' is '\[0,', not a valid value"):
        artifact.check_manifest_matches_graph(m, {**stamped, "class_names": "[0,"}, "manifest.json", "model.onnx")
