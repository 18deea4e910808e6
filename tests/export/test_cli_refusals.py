"""gru-export's refusals: one line first on stderr, a non-zero exit, no traceback (issue 27).

Covers errors raised inside the tf2onnx fallback (a gelu Dense makes TensorFlow emit ``Erfc``, which ONNX
does not have), ``initial_state`` inputs (refused, naming the layer), ``stateful=True`` GRUs (exported with
the batch size freed) and layers the native exporter does not know (named with their class, and whether
``--backend tf2onnx`` takes them).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.packaging import cli_export  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402

T, F = 12, 3
L = keras.layers


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _sample(tmp_path, n=24):
    X = np.random.default_rng(0).standard_normal((n, T, F)).astype(np.float32)
    path = tmp_path / "sample.npz"
    np.savez(path, X=X)
    return X, path


def _run(tmp_path, model, name, *extra):
    X, sample = _sample(tmp_path)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    out = tmp_path / f"{name}_out"
    return cli_export.main([str(path), "--sample-data", str(sample), "--out", str(out), *extra]), out, X


def test_tf2onnx_fallback_error_is_one_line_in_a_fresh_process(tmp_path):
    """The Erfc ValidationError of the issue: first stderr line is the reason, exit 4, no traceback, no TF noise."""
    model = keras.Sequential([keras.Input((T, F)), L.GRU(8), L.Dense(8, activation="gelu"),
                              L.Dense(1, activation="sigmoid")])
    path = tmp_path / "gelu.keras"
    model.save(path)
    _, sample = _sample(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "pipeline.packaging.cli_export", str(path), "--sample-data",
                           str(sample), "--out", str(tmp_path / "out"), "--backend", "tf2onnx"],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 4, done.stderr
    assert lines and lines[0].startswith("gru-export: error: tf2onnx could not convert the model"), done.stderr
    assert "Erfc" in lines[0]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_initial_state_input_is_refused_naming_the_layer(tmp_path, capsys):
    seq, h0 = keras.Input((T, F)), keras.Input((8,))
    out = L.Dense(1, activation="sigmoid")(L.GRU(8, name="gru_with_state")(seq, initial_state=h0))
    code, _, _ = _run(tmp_path, keras.Model([seq, h0], out), "init")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "'gru_with_state' (class GRU) takes an initial_state input" in err[0]


def test_stateful_gru_is_exported_with_the_batch_size_freed(tmp_path):
    """keras2c's stateful=True GRU (fixed batch 4): exported natively, equal to the model after reset_states()."""
    model = keras.Sequential([keras.Input(batch_shape=(4, T, F)), L.GRU(8, stateful=True),
                              L.Dense(1, activation="sigmoid")])
    code, out, _ = _run(tmp_path, model, "stateful")
    assert code == 0
    p = Predictor.load(out)
    X = np.random.default_rng(5).standard_normal((4, T, F)).astype(np.float32)
    model.layers[0].reset_states()
    want = model.predict(X, batch_size=4, verbose=0)[:, 0]
    assert np.abs(p.predict_proba(X) - want).max() <= 1e-5
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "native"
    assert "stateful=True" in manifest["source"]["stateful"]


def test_unknown_layer_names_its_class_and_the_tf2onnx_option(tmp_path, capsys):
    class Twice(L.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((T, F)), Twice(name="twice"), L.GRU(8), L.Dense(1, activation="sigmoid")])
    X, sample = _sample(tmp_path)
    from pipeline.packaging.own_model import export_keras_model
    from pipeline.settings import ExportConfig
    from pipeline.export.native import UnsupportedModelError

    with pytest.raises(UnsupportedModelError) as info:
        export_keras_model(model, X, tmp_path / "out", export=ExportConfig(backend="native"))
    msg = str(info.value)
    assert "layer 'twice' (class Twice) has no native ONNX mapping" in msg or "'twice' (class Twice)" in msg
    assert "--backend tf2onnx converts it" in msg


def test_per_step_gru_activation_exports_and_says_what_it_gives_up(tmp_path):
    """gelu / softmax GRU activations (not in the ONNX GRU op's list): a per-step model.onnx, no Loop; the
    manifest says why there is no stream graph and no separate unrolled graph."""
    import json

    model = keras.Sequential([keras.Input((T, F)), L.GRU(8, activation="gelu", return_sequences=True),
                              L.GRU(6, recurrent_activation="softmax"), L.Dense(3, activation="softmax")])
    code, out, _ = _run(tmp_path, model, "gelu_gru")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "native" and not {"Loop", "Scan", "GRU"} & set(manifest["model"]["ops"])
    assert "gelu has no ONNX GRU equivalent" in manifest["stream"]["reason"]
    assert "itself the per-step graph" in manifest["unrolled"]["reason"]
    X = np.random.default_rng(9).standard_normal((7, T, F)).astype(np.float32)
    assert np.abs(Predictor.load(out).predict_proba(X) - model.predict(X, verbose=0)).max() <= 1e-5
