"""Boundary rule: the runtime imports and predicts with TensorFlow, Keras, tf2onnx and onnx blocked."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_works_without_heavy_packages():
    code = textwrap.dedent(
        """
        import sys
        for name in ("tensorflow", "keras", "tf2onnx", "onnx", "tensorflow.keras"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import numpy as np
        from pipeline.runtime import Predictor
        from pipeline.runtime import cli  # the CLI module too
        p = Predictor.load("exported")
        ref = np.load("exported/reference.npz")
        proba = p.predict_proba(ref["X"][:4])
        assert proba.shape == (4,)
        heavy = [m for m in ("tensorflow", "keras", "tf2onnx", "onnx") if sys.modules.get(m) is not None]
        assert not heavy, heavy
        print("ok", proba.tolist())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")


def test_runtime_import_does_not_load_heavy_modules():
    code = "import sys, pipeline.runtime, pipeline.runtime.cli; print(sorted(m for m in ('tensorflow','keras','tf2onnx','onnx') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
