"""A virtualenv with only `pip install .` (numpy + onnxruntime) runs gru-predict on the committed model."""

import os
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_runtime_only_install_runs_predict_cli(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Install from a copy of the package sources so the install never writes into the work tree.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    for heavy in ("tensorflow", "keras", "tf2onnx", "onnx=="):
        assert heavy not in freeze, f"{heavy} installed by the runtime-only install"
    ref = np.load(ROOT / "exported" / "reference.npz")
    data = tmp_path / "in.npy"
    np.save(data, ref["X"][:5])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(env_dir / "bin" / "gru-predict"), str(ROOT / "exported"), str(data)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "id,probability,label" and len(lines) == 6
    got = np.array([float(row.split(",")[1]) for row in lines[1:]])
    np.testing.assert_allclose(got, ref["keras_proba"][:5], atol=1e-5)
