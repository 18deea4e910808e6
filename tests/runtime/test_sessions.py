"""pipeline.runtime.sessions: the session options, load-error mapping and CPU count every caller shares.

Also guards that it stays the only place in ``pipeline/`` and ``tools/`` that creates onnxruntime
sessions or options, or reads the CPU affinity. TF-free (the tiny model from conftest.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.errors import ArtifactError, ConfigError, ExportError
from pipeline.runtime import sessions

ROOT = Path(__file__).resolve().parents[2]


def test_options_per_thread_count():
    so = sessions.session_options(1)
    assert so.intra_op_num_threads == 1
    assert so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.log_severity_level == 3
    assert sessions.session_options(3).intra_op_num_threads == 3
    assert sessions.session_options(None).intra_op_num_threads == ort.SessionOptions().intra_op_num_threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_count_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"threads: expected None or a positive integer, got"):
        sessions.session_options(bad)


def test_open_from_path_and_from_bytes_give_the_same_numbers(tiny_model_dir):
    path = tiny_model_dir / "model.onnx"
    by_path = sessions.open_session(path)
    by_bytes = sessions.open_session(path.read_bytes(), threads=2, name="tiny")
    X = np.random.default_rng(0).standard_normal((5, 7, 3)).astype(np.float32)  # (batch, time, features)
    name = by_path.get_inputs()[0].name
    a, b = by_path.run(None, {name: X})[0], by_bytes.run(None, {name: X})[0]
    assert a.shape == (5, 1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("content", [b"", b"not an onnx model\n" * 10, None])
def test_unloadable_file_is_one_line_artifact_error_naming_the_file(tmp_path, tiny_model_dir, content):
    path = tmp_path / "model.onnx"
    if content is None:  # truncated copy of a valid model
        content = (tiny_model_dir / "model.onnx").read_bytes()[:40]
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as info:
        sessions.open_session(path)
    msg = str(info.value)
    assert msg.startswith(f"{path} is not a loadable ONNX model (truncated or corrupted?): ")
    assert "\n" not in msg and len(msg) < len(str(path)) + 300


def test_missing_file_is_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="is not a loadable ONNX model"):
        sessions.open_session(tmp_path / "absent.onnx")


def test_unloadable_bytes_are_one_line_export_error_naming_the_graph():
    with pytest.raises(ExportError) as info:
        sessions.open_session(b"garbage" * 50, name="tf2onnx Loop graph")
    msg = str(info.value)
    assert msg.startswith("tf2onnx Loop graph: onnxruntime cannot load this in-memory ONNX graph: ")
    assert "\n" not in msg


def test_usable_cpus_is_the_affinity_mask():
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert sessions.usable_cpus() == max(1, want)


# Files that may still build sessions themselves, each with the reason. An entry whose file no
# longer does so fails the test, so the list cannot go stale.
PENDING: dict[str, str] = {  # files allowed to build sessions themselves, with the reason
    "tools/bench_serve.py": "the MLServer peer's model file, run in MLServer's own virtualenv without this package",
}
OWNED = re.compile(r"\b(InferenceSession|SessionOptions)\s*\(|sched_getaffinity")


def test_sessions_module_is_the_only_session_factory():
    files = sorted(p for d in ("pipeline", "tools") for p in (ROOT / d).rglob("*.py"))
    assert files
    found = {str(p.relative_to(ROOT)) for p in files if OWNED.search(p.read_text())}
    found.discard("pipeline/runtime/sessions.py")
    assert found == set(PENDING), (
        f"onnxruntime sessions/options or the CPU count built outside pipeline/runtime/sessions.py: "
        f"{sorted(found - set(PENDING))}; stale PENDING entries: {sorted(set(PENDING) - found)}")
