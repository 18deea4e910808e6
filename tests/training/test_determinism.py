"""Same seed + same data -> byte-identical model.onnx on one machine; the manifest records seed and versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import artifact

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

TINY_TOML = """\
seed = {seed}
[data]
n_samples = 200
timesteps = 12
features = 3
[model]
units = 8
[train]
epochs = 2
verbose = "0"
[verify]
n_random = 32
large_batch = 64
odd_batch = 5
"""


def builds(tmp: Path, seeds: dict[str, int]) -> dict[str, Path]:
    """Run one gru-build per (name, seed) at the same time (separate processes: same machine, same bytes
    whatever runs beside them); every build must succeed. Returns name -> output folder."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    for name, seed in seeds.items():
        config = tmp / f"{name}.toml"
        config.write_text(TINY_TOML.format(seed=seed))
        procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline.training", "--config", str(config), "--out",
                                        str(tmp / name)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
    return {name: tmp / name for name in seeds}


def test_same_seed_same_onnx_bytes(tmp_path):
    built = builds(tmp_path, {"a": 7, "b": 7, "c": 8})
    a, b, c = built["a"], built["b"], built["c"]
    for name in ("model.onnx", "stream.onnx"):
        if (a / name).exists() or (b / name).exists():
            assert artifact.sha256_file(a / name) == artifact.sha256_file(b / name), f"{name} differs between builds"
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["model"]["sha256"] == mb["model"]["sha256"]
    assert ma["seed"] == mb["seed"] == 7 and ma["config"]["seed"] == 7
    for key in ("pipeline", "python", "numpy", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        assert isinstance(ma["versions"].get(key), str) and ma["versions"][key], f"manifest lacks versions.{key}"
    assert ma["versions"] == mb["versions"]
    # a different seed gives a different model (the seed is really used)
    assert artifact.sha256_file(c / "model.onnx") != artifact.sha256_file(a / "model.onnx")
