"""Bring your own data: NPZ, CSV (variable length, string labels) and .ts files go through
``gru-build`` (train, export, verify, report) and ``gru-predict`` prints the original class names;
bad data fails with one line on stderr, a non-zero exit code and nothing written."""

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from pipeline.training import cli as build_cli
from pipeline.settings import TrainConfig, load_config
from pipeline.report.metrics import auc, choose_threshold, confusion, roc_curve
from pipeline.runtime import cli as predict_cli

TINY_TOML = """
seed = 3

[model]
units = 8

[train]
updates = 120         # keeps each test build to a few seconds
learning_rate = 0.01
verbose = "0"

[verify]
n_random = 32
large_batch = 64
odd_batch = 7
"""

PLOTS = ["training_curves.png", "roc_curve.png", "precision_recall_curve.png", "confusion_matrix.png",
         "equivalence_errors.png"]


# ---------------------------------------------------------------------------- data writers

def _series(rng, n, lengths, n_features):
    """Labelled toy sequences: class 1 has a positive bump on feature 0, class 0 a negative one."""
    y = np.arange(n) % 2
    out = []
    for i in range(n):
        x = rng.standard_normal((lengths[i], n_features)).astype(np.float32)
        k = rng.integers(0, lengths[i] - 3)
        x[k:k + 3, 0] += 3.0 if y[i] else -3.0
        out.append(x)
    return out, y


def write_csv(path, n=30, seed=0, names=("cat", "dog")):
    rng = np.random.default_rng(seed)
    series, y = _series(rng, n, rng.integers(8, 16, size=n), 2)
    rows = ["sample_id,t,a,b,label"]
    for i, x in enumerate(series):
        for t, (a, b) in enumerate(x):
            rows.append(f"s{i},{t},{a:.5f},{b:.5f},{names[y[i]]}")
    Path(path).write_text("\n".join(rows) + "\n")
    return path


def write_ts(path, n, seed, labels=("1", "2"), length=12):
    rng = np.random.default_rng(seed)
    series, y = _series(rng, n, [length] * n, 1)
    lines = ["@problemName Toy", "@timeStamps false", "@univariate true",
             f"@classLabel true {' '.join(labels)}", "@data"]
    lines += [",".join(f"{v:.5f}" for v in x[:, 0]) + f":{labels[y[i]]}" for i, x in enumerate(series)]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def write_npz(path, n=40, seed=1):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 11, size=n)
    series, y = _series(rng, n, lengths, 3)
    X = np.zeros((n, 10, 3), np.float32)
    for i, x in enumerate(series):
        X[i, : len(x)] = x
    np.savez(path, X=X, y=np.where(y == 1, 7, 3), lengths=lengths)
    return path


def gru_build(args, capsys):
    code = build_cli.main(list(args))
    err = capsys.readouterr().err
    return code, err


def gru_predict(model_dir, data):
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = predict_cli.main([str(model_dir), str(data)])
    assert code == 0
    rows = buf.getvalue().strip().splitlines()
    assert rows[0] == "id,probability,label"
    return [r.split(",") for r in rows[1:]]


# ---------------------------------------------------------------------------- builds (shared)

@pytest.fixture(scope="session")
def own_builds(tmp_path_factory):
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("own_data")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY_TOML)
    files = {
        "csv": (write_csv(root / "train.csv"), None),
        "npz": (write_npz(root / "train.npz"), None),
        "ts": (write_ts(root / "Toy_TRAIN.ts", 40, 2), write_ts(root / "Toy_TEST.ts", 24, 3)),
    }
    builds = {}
    for kind, (train, test) in files.items():
        out = root / f"out_{kind}"
        argv = ["--data", str(train), "--out", str(out), "--config", str(cfg)]
        if test:
            argv += ["--test-data", str(test)]
        if kind == "npz":
            argv += ["--units", "6", "--seed", "5", "--val-fraction", "0.25"]  # flags override the config file
        assert build_cli.main(argv) == 0, kind
        builds[kind] = (out, train, test)
    return builds


@pytest.mark.parametrize("kind, names", [("csv", ["cat", "dog"]), ("npz", [3, 7]), ("ts", [1, 2])])
def test_build_verify_predict(own_builds, kind, names):
    out, train, test = own_builds[kind]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == names
    assert manifest["equivalence"]["passed"]
    assert manifest["task"] == "binary" and manifest["decision"]["rule"] == "threshold"
    threshold = manifest["decision"]["threshold"]
    assert 0 < threshold < 1 and manifest["decision_source"]
    assert manifest["metrics"]["test"]["n"] >= 1
    # Variable-length data is padded and masked automatically: the lengths are an input, no value means padding.
    assert manifest["masking"]["enabled"] is (kind in ("csv", "npz"))
    assert manifest["masking"]["mask_value"] is None
    assert manifest["input"]["lengths"] == ("lengths" if kind in ("csv", "npz") else None)
    # Report and plots are in the artifact folder.
    report = (out / "report.md").read_text()
    for png in PLOTS:
        assert (out / png).stat().st_size > 1000, png
        assert f"]({png})" in report
    assert "ROC AUC" in report and "threshold" in report
    # gru-predict prints the original class names, thresholded at the manifest's threshold.
    rows = gru_predict(out, test or train)
    assert {r[2] for r in rows} <= {str(n) for n in names}
    for _, p, label in rows:
        assert label == str(names[int(float(p) >= threshold)])


def test_config_file_and_flags_saved_resolved(own_builds):
    cfg = json.loads((own_builds["npz"][0] / "manifest.json").read_text())["config"]
    assert cfg["train"]["updates"] == 120 and cfg["train"]["learning_rate"] == 0.01  # from TOML
    assert cfg["model"]["units"] == 6 and cfg["seed"] == 5                               # flags win
    assert cfg["train"]["class_weight"] == "balanced"                                     # defaults
    assert cfg["data"]["path"].endswith("train.npz")


def test_small_file_trains_on_all_of_it_for_the_update_budget(own_builds):
    m = json.loads((own_builds["csv"][0] / "manifest.json").read_text())
    sched = m["metrics"]["schedule"]
    assert sched["updates"] >= 120 and sched["batch_size"] == 16 and sched["updates_per_round"] <= 100
    assert "validation" not in m["metrics"]  # no validation split by default: every training row is used
    assert m["metrics"]["train"]["n"] + m["metrics"]["test"]["n"] == 30
    assert m["decision"]["threshold"] == 0.5 and "no validation split" in m["decision_source"]


def test_validation_split_on_request_chooses_the_threshold(own_builds):
    m = json.loads((own_builds["npz"][0] / "manifest.json").read_text())
    n = {split: m["metrics"][split]["n"] for split in ("train", "validation", "test")}
    assert n["validation"] >= 2 and sum(n.values()) == m["config"]["data"]["n_samples"]
    assert min(sum(row) for row in m["metrics"]["validation"]["confusion_matrix"]) >= 1  # both classes held out
    assert "validation" in m["decision_source"] and len(m["training_history"]["val_loss"]) == m["metrics"]["schedule"]["rounds"]


# ---------------------------------------------------------------------------- bad data

def _bad_files(d: Path):
    ok_csv = write_csv(d / "ok.csv")
    (d / "cols.csv").write_text("id,time,a,label\n1,0,0.5,x\n")
    (d / "ragged.csv").write_text("sample_id,t,a,b,label\ns1,0,1,2,x\ns1,1,1,x\n")
    (d / "ragged.ts").write_text("@classLabel true 1 2\n@data\n1,2,3:4,5,6:1\n1,2,3:2\n")
    (d / "empty.csv").write_text("")
    (d / "data.txt").write_text("1,2,3\n")
    text = ok_csv.read_text().splitlines()
    (d / "nan.csv").write_text("\n".join(text[:5] + [text[5].replace(text[5].split(",")[2], "nan", 1)] + text[6:]) + "\n")
    (d / "one.csv").write_text(ok_csv.read_text().replace(",dog", ",cat"))
    write_ts(d / "three.ts", 30, 0)
    three = (d / "three.ts").read_text().splitlines()
    three[-1] = three[-1].rsplit(":", 1)[0] + ":3"
    (d / "three.ts").write_text("\n".join(three) + "\n")
    write_ts(d / "other_labels.ts", 12, 1, labels=("a", "b"))
    write_ts(d / "ok.ts", 30, 2)
    np.savez(d / "nolabels.npz", X=np.zeros((4, 5, 2), np.float32))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 6, 1)).astype(np.float32)
    np.savez(d / "ids012.npz", X=X, y=np.arange(12) % 3)                    # class ids 0, 1, 2
    np.savez(d / "ids013.npz", X=X, y=np.array([0, 1, 3] * 4))              # id 2 has no training sample
    np.savez(d / "ids0123.npz", X=X[:8], y=np.array([0, 1, 2, 3] * 2))      # test id 3 >= k = 3
    far = X.copy()
    far[5, 2, 0] = -1e35  # finite, but scales to about -1e35: where the padding value lives
    np.savez(d / "far.npz", X=far, y=np.arange(12) % 3, lengths=np.array([6, 5] * 6))
    return {
        "test id at or above k": (["--data", str(d / "ids012.npz"), "--test-data", str(d / "ids0123.npz")],
                                  "ids0123.npz: expected class ids 0..2 (the 3 classes of "),
        "class absent from training": (["--data", str(d / "ids013.npz")],
                                       "ids013.npz: expected a training sample of every class id 0..3 (integer "
                                       "labels starting at 0 are class ids), got none of class 2"),
        "scaled value at the padding value": (["--data", str(d / "ids012.npz"), "--test-data", str(d / "far.npz")],
                                              "far.npz: sample 5 timestep 2 feature 0 scales to -"),
        "wrong columns": (["--data", str(d / "cols.csv")], "expected header"),
        "ragged csv": (["--data", str(d / "ragged.csv")], "expected 5 columns"),
        "ragged ts": (["--data", str(d / "ragged.ts")], "expected 2 dimensions"),
        "empty": (["--data", str(d / "empty.csv")], "empty"),
        "unknown format": (["--data", str(d / "data.txt")], "unknown data format"),
        "nan": (["--data", str(d / "nan.csv")], "NaN"),
        "one class": (["--data", str(d / "one.csv")], "one.csv: expected at least 2 classes, got 1 ('cat')"),
        "a class with too few samples to split": (["--data", str(d / "three.ts")],
                                                  "each class needs at least 3 samples to split train/test, got "
                                                  "[15, 14, 1]"),
        "missing file": (["--data", str(d / "nope.csv")], "not found"),
        "no labels": (["--data", str(d / "nolabels.npz")], "expected labels"),
        "test features differ": (["--data", str(d / "ok.csv"), "--test-data", str(d / "other_labels.ts")], "features"),
        "test labels unknown": (["--data", str(d / "ok.ts"), "--test-data", str(d / "other_labels.ts")], "do not occur"),
    }


def test_bad_data_one_line_nonzero_nothing_written(tmp_path, capsys):
    # the quick tier's guard fails this test if gru-build imports TensorFlow before it refuses the data
    cases = _bad_files(tmp_path)
    for name, (argv, needle) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        before = set(tmp_path.iterdir())
        code, err = gru_build(argv + ["--out", str(out)], capsys)
        assert code != 0, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gru-build: error: "), (name, err)
        assert needle in lines[0], (name, lines[0])
        assert not out.exists() and set(tmp_path.iterdir()) == before, name


# ---------------------------------------------------------------------------- pieces (no training)

def test_roc_auc_matches_rank_statistic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.6 + 0.3 * y, 2)  # ties on purpose
    fpr, tpr, _ = roc_curve(y, p)
    pos, neg = p[y == 1], p[y == 0]
    mw = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auc(fpr, tpr) == pytest.approx(mw, abs=1e-12)


def test_threshold_choice():
    assert choose_threshold(np.array([1, 1, 1]), np.array([0.2, 0.3, 0.9]))[0] == 0.5  # one class only
    assert choose_threshold(np.array([0, 1]), np.array([0.1, 0.9]))[0] == 0.5         # 0.5 already optimal
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])                      # all below 0.5
    t, _ = choose_threshold(y, p)
    assert 0.2 < t <= 0.3 and confusion(y, p, t) == [[2, 0], [0, 2]]


def test_update_budget_schedule():
    from pipeline.training.fit import class_weights, plan_schedule, sample_order

    small = plan_schedule(26, TrainConfig(), 150)  # batch 16: 2 updates per pass, grouped in rounds of 100 updates
    assert small == {**small, "updates": 2000, "batch_size": 16, "rounds": 20, "updates_per_round": 100}
    assert [plan_schedule(26, TrainConfig(), T)["updates"] for T in (24, 286, 1000)] == [2000, 1100, 1000]  # 300k / T
    assert plan_schedule(26, TrainConfig(updates=250), 24)["updates"] == 300     # explicit, whole rounds
    assert plan_schedule(10, TrainConfig(), 50)["batch_size"] == 10              # the whole set when smaller
    large = plan_schedule(4800, TrainConfig(), 50)                               # batch 64: 75 updates a pass
    assert large == {**large, "batch_size": 64, "updates_per_round": 100, "rounds": 20, "updates": 2000}
    assert plan_schedule(2048, TrainConfig(), 50)["batch_size"] == 32            # n / 64 between 16 and 64
    assert plan_schedule(4800, TrainConfig(batch_size=8), 50)["batch_size"] == 8  # an explicit size is kept
    assert plan_schedule(26, TrainConfig(epochs=2), 50)["updates"] == 4          # epochs: passes over the data
    order = sample_order(7, 30, seed=1)
    assert [sorted(order[i:i + 7].tolist()) for i in (0, 7, 14, 21)] == [list(range(7))] * 4  # whole passes
    assert np.array_equal(order, sample_order(7, 30, seed=1)) and not np.array_equal(order, sample_order(7, 30, seed=2))
    w = class_weights(np.array([0] * 30 + [1] * 10), "balanced")
    assert w[1] == pytest.approx(3 * w[0]) and class_weights(np.array([0, 1]), "none") is None
    w3 = class_weights(np.array([0] * 30 + [1] * 10 + [2] * 20), "balanced", 3)  # n / (k * n_c)
    assert w3 == pytest.approx({0: 60 / 90, 1: 60 / 30, 2: 60 / 60})


def test_config_types_checked():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="expects int"):
        load_config(None, {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="threshold"):
        load_config(None, {"train": {"threshold": 1.5}})
