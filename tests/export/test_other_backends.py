"""A .keras file does not depend on its backend: models saved under JAX and PyTorch export and run.

Each model is built, saved and evaluated in a child process with KERAS_BACKEND set; gru-export
then runs here (TensorFlow backend) and the runtime must give that backend's predictions within
1e-5 on inputs the export never saw."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

SAVE = r"""
import os, sys
import numpy as np, keras
keras.utils.set_random_seed(0)
T, F = 10, 3
model = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(8), keras.layers.Dense(1, activation="sigmoid")])
X = np.random.default_rng(0).standard_normal((40, T, F)).astype("float32")  # (N, T, F)
model.save(sys.argv[1])
np.savez(sys.argv[2], X=X[:20])
np.save(sys.argv[3], X[20:])
np.save(sys.argv[4], model.predict(X[20:], verbose=0)[:, 0])
print(keras.backend.backend())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend,module", [("jax", "jax"), ("torch", "torch")])
def test_model_saved_under_another_backend_exports(tmp_path, backend, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make test installs it with the 'backends' extra)")
    from pipeline.packaging import cli_export as export_cli
    from pipeline.runtime import Predictor

    files = [tmp_path / n for n in ("m.keras", "sample.npz", "unseen.npy", "pred.npy")]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", SAVE, *map(str, files)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == backend
    out = tmp_path / "out"
    assert export_cli.main([str(files[0]), "--sample-data", str(files[1]), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "native"
    got = Predictor.load(out).predict_proba(np.load(files[2]))
    assert np.abs(got - np.load(files[3])).max() <= 1e-5
