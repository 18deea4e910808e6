"""Boundary rule: the runtime imports and predicts without the heavy side.

Proved three ways:
- in a child process where tensorflow, keras, tf2onnx, onnx and the heavy pipeline packages
  (training, export, verification, report, benchmarks) all fail to import, the runtime loads the
  committed model and predicts through every path (small batch, unrolled-graph batch, stream, CLI);
- in a child process with nothing blocked, the same work leaves none of them in ``sys.modules``
  (so no ``try: import ... except ImportError`` hides a heavy import);
- the files of tests/runtime import none of them either (README: tests/runtime needs no TensorFlow).
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx")
HEAVY_PIPELINE = ("pipeline.training", "pipeline.export", "pipeline.verification", "pipeline.report",
                  "pipeline.benchmarks")
FORBIDDEN = HEAVY_PACKAGES + HEAVY_PIPELINE

# The child's work: every runtime entry point on the committed model, checked against the
# committed Keras reference. Prints "ok" and the heavy modules found loaded afterwards.
RUNTIME_WORK = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import numpy as np
    from pipeline.runtime import Predictor, sessions
    from pipeline.runtime import cli, stream  # the CLI and stream modules too
    from pipeline.runtime import predictor as predictor_module

    manifest = json.loads(Path("exported/manifest.json").read_text())
    atol = manifest["config"]["verify"]["atol"]
    ref = np.load("exported/reference.npz")
    X, want = ref["X"], ref["keras_proba"]                       # (N, T, F), (N,)
    from pipeline.runtime import fused
    f = Predictor.load("exported")                               # the fused kernel where it is built
    fast = f.predict_proba(X[:70])
    assert f.debug_info()["fused"]["used"] or fused.library_path() is None, f.debug_info()
    p = Predictor.load("exported", fused=False)                  # today's onnxruntime graphs
    small = p.predict_proba(X[:4])                               # native graph, one call
    assert small.shape == (4,), small.shape
    n = predictor_module.UNROLLED_MIN_ROWS
    assert p.unrolled_timesteps == X.shape[1], "expected the committed model to use its unrolled graph"
    large = p.predict_proba(X[:n])                               # unrolled graph, worker chunks
    assert p._unrolled is not None, "the unrolled session was not opened"
    with p.stream() as s:                                        # stream.onnx
        for row in X[0]:
            last = s.push(row[None])
    for got, exp in ((small, want[:4]), (large, want[:n]), (np.array([last]), want[:1]), (fast, want[:70])):
        err = float(np.abs(got.astype(np.float64) - exp).max())
        assert err <= atol, (err, atol)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", X[:3])
        out = Path(tmp) / "out.csv"
        assert cli.main(["exported", str(Path(tmp) / "x.npy"), "--output", str(out)]) == 0
        assert len(out.read_text().splitlines()) == 4
    assert sessions.usable_cpus() >= 1
    loaded = sorted(m for m in FORBIDDEN if sys.modules.get(m) is not None)
    print("ok", loaded)
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_runtime_works_with_heavy_packages_and_pipeline_packages_blocked():
    block = textwrap.dedent(
        f"""
        import sys
        FORBIDDEN = {FORBIDDEN!r}
        for name in FORBIDDEN + ("tensorflow.keras",):
            sys.modules[name] = None  # any import of these now raises ImportError
        """
    )
    res = _run(block + RUNTIME_WORK)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok []", res.stdout


def test_blocking_really_blocks():
    """The blocking above is effective: importing a blocked package fails in such a child."""
    code = ("import sys\nsys.modules['pipeline.training'] = None\n"
            "try:\n    import pipeline.training.model\nexcept ImportError:\n    print('blocked')\n")
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "blocked"


def test_runtime_work_does_not_load_heavy_modules():
    res = _run(f"FORBIDDEN = {FORBIDDEN!r}\n" + RUNTIME_WORK)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok []", res.stdout


def test_runtime_import_does_not_load_heavy_modules():
    code = ("import sys, pipeline.runtime, pipeline.runtime.cli, pipeline.runtime.stream, pipeline.runtime.sessions; "
            f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))")
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_runtime_tests_import_nothing_heavy():
    """tests/runtime needs no TensorFlow: no file in it imports a heavy package or pipeline package.

    The one exception is ``onnx`` (a build dependency, not TensorFlow), used by conftest.py to write
    the tiny test models and by test_properties.py to read their weights back.
    """
    onnx_allowed = {"conftest.py", "test_properties.py"}
    files = sorted((ROOT / "tests" / "runtime").glob("*.py"))
    assert len(files) >= 5, files
    offenders = []
    for path in files:
        forbidden = HEAVY_PIPELINE + tuple(m for m in HEAVY_PACKAGES if not (m == "onnx" and path.name in onnx_allowed))
        for name in sorted(_imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
