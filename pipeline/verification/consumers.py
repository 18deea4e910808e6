"""Cross-runtime check: model.onnx, alone, run by runtimes that are not ours, on the reference inputs.

Owns: running the shipped ``model.onnx`` with nothing but the file and the raw reference inputs in
    onnxruntime (Python)    an ``InferenceSession`` from pipeline.runtime.sessions (the project's one
                            session factory) fed the file's input directly, no Predictor in between
    OpenVINO (Python)       ``read_model`` + ``compile_model`` on CPU, f32 precision hint
    onnxruntime-node        ``tools/onnx_node_check.mjs`` under node, with onnxruntime-node from
                            ``tools/node/node_modules`` (``make node-deps`` installs it)
and comparing each with Keras' probabilities within ``CONSUMER_ATOL``; the manifest entry
(pipeline.report.writer renders it). Imports: numpy, pipeline.runtime.sessions; openvino lazily; node through subprocess.
Reads: ``<folder>/model.onnx``; writes the inputs for node into a temporary folder only.

A consumer that cannot run here (package not installed, node missing, ...) is recorded as
``"not run"`` with the reason, never as ``"ok"``; one that cannot load the file (an op it does not
implement, e.g. OpenVINO on tf2onnx's Loop graph) is ``"unsupported"`` with the reason. A consumer
that runs and disagrees with Keras beyond ``CONSUMER_ATOL`` is ``"failed"``, and the export stops
with a VerificationError (``raise_on_failure``): a failed check is an error, never a warning.
Tests assert every consumer that can run here is ``"ok"``.

Manifest entry ``"consumers"``::

    {"atol": 1e-5, "file": "model.onnx", "rows": 256, "inputs": "reference.npz X (raw)",
     "results": [{"runtime": "onnxruntime (Python)", "version": "1.20.1", "status": "ok",
                  "max_abs_error_vs_keras": 3e-8, "reason": null}, ...]}
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline import progress
from pipeline.verification.tolerances import CONSUMER_ATOL

__all__ = ["CONSUMER_ATOL", "NODE_DIR", "NODE_SCRIPT", "run_onnxruntime", "run_openvino", "run_node",
           "check_consumers", "raise_on_failure"]

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tools" / "node"            # package.json + node_modules (onnxruntime-node)
NODE_SCRIPT = ROOT / "tools" / "onnx_node_check.mjs"
NODE_TIMEOUT_S = 300

Runner = Callable[[Path, dict[str, np.ndarray]], tuple[np.ndarray, str]]


class NotRun(Exception):
    """The consumer cannot run here; the message says why (recorded as "not run")."""


def _probabilities(out: np.ndarray) -> np.ndarray:
    """The first graph output as the artifact's probabilities: (N, 1) -> (N,) p(class 1); (N, k) stays."""
    out = np.asarray(out, np.float32)
    return out.reshape(-1) if out.ndim == 1 or out.shape[-1] == 1 else out.reshape(out.shape[0], -1)


def run_onnxruntime(model: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """A plain onnxruntime session on the file: (probabilities, version)."""
    import onnxruntime

    from pipeline.runtime.sessions import open_session

    out = open_session(model, threads=None).run(None, feeds)[0]
    return _probabilities(out), onnxruntime.__version__


def run_openvino(model: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """OpenVINO CPU at f32 (bf16-capable CPUs default to bf16): (probabilities, version)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise NotRun(f"the openvino package is not installed ({exc}); pip install openvino") from None
    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled.create_infer_request().infer(feeds)[compiled.output(0)]
    return _probabilities(out), ov.__version__.split("-")[0]


def run_node(model: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """tools/onnx_node_check.mjs with onnxruntime-node: (probabilities, "node <v>, onnxruntime-node <v>")."""
    (input_name, X), *rest = feeds.items()
    if X.dtype.kind != "f":
        raise NotRun("the Node check feeds float32 features; token-id models are checked in Python only")
    node = shutil.which("node")
    if node is None:
        raise NotRun("node is not on PATH")
    if not NODE_SCRIPT.is_file():
        raise NotRun(f"{NODE_SCRIPT} is missing (the check runs from a source checkout)")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        raise NotRun(f"onnxruntime-node is not installed in {NODE_DIR} (make node-deps)")
    with tempfile.TemporaryDirectory(prefix="onnx-node-") as tmp:
        inputs, outputs = Path(tmp) / "x.f32", Path(tmp) / "probability.f32"
        np.ascontiguousarray(X, "<f4").tofile(inputs)
        shape = ",".join(str(d) for d in X.shape)
        args = [node, str(NODE_SCRIPT), str(model), input_name, str(inputs), shape, str(outputs)]
        for name, values in rest:  # the lengths of a variable-length model
            np.ascontiguousarray(values, "<i8").tofile(Path(tmp) / "lengths.i64")
            args += [name, str(Path(tmp) / "lengths.i64")]
        try:
            res = subprocess.run(args, capture_output=True, text=True, timeout=NODE_TIMEOUT_S,
                                 env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"node did not finish within {NODE_TIMEOUT_S} s") from None
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"node exited with {res.returncode}: {last[:300]}")
        info = json.loads(res.stdout.strip().splitlines()[-1])
        proba = np.fromfile(outputs, "<f4").reshape([int(d) for d in info.get("dims") or [-1]])
    return _probabilities(proba), f"node {info['node']}, onnxruntime-node {info['onnxruntime']}"


CONSUMERS: list[tuple[str, Runner]] = [
    ("onnxruntime (Python)", run_onnxruntime),
    ("OpenVINO (Python)", run_openvino),
    ("onnxruntime-node (JavaScript)", run_node),
]


def _reason_line(text: str) -> str:
    """The informative line of a runtime's exception text. OpenVINO's starts with a stack of
    "Exception from src/...:117:" lines and says why after "CALLBACK HAS THROWN:" (e.g. "Unknown activation
    function: softsign" for a GRU activation it does not implement)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if "THROWN:" in line:
            rest = line.split("THROWN:", 1)[1].strip()
            if rest and not rest.startswith("Exception from"):
                return rest
    useful = [line for line in lines if not line.startswith("Exception from")]
    return useful[-1] if useful else (lines[0] if lines else "")


def check_consumers(folder: Path, X: np.ndarray, keras_p: np.ndarray, input_spec: dict[str, Any],
                    lengths: Optional[np.ndarray] = None, model_file: str = "model.onnx", atol: float = CONSUMER_ATOL,
                    consumers: Optional[list[tuple[str, Runner]]] = None) -> dict[str, Any]:
    """Run every consumer on raw ``X`` (N, T, F) (or token ids (N, T)) and, for a variable-length model,
    its ``lengths`` (N,); compare with ``keras_p`` ((N,) or (N, k)).

    ``input_spec`` is the manifest ``input`` entry: its ``name``, ``dtype`` and ``lengths`` (the
    second input's name, or None). Returns the manifest entry; ``raise_on_failure`` turns a "failed"
    one into an error.
    """
    path = Path(folder) / model_file
    X = np.ascontiguousarray(X, np.int64 if input_spec.get("dtype") == "int64" else np.float32)
    feeds = {input_spec["name"]: X}
    if input_spec.get("lengths"):
        feeds[input_spec["lengths"]] = np.ascontiguousarray(lengths, np.int64)
    keras_p = np.asarray(keras_p, np.float64)
    results = []
    for name, run in consumers or CONSUMERS:
        entry: dict[str, Any] = {"runtime": name, "version": None, "status": "not run",
                                 "max_abs_error_vs_keras": None, "reason": None}
        try:
            proba, entry["version"] = run(path, feeds)
        except NotRun as exc:
            entry["reason"] = str(exc)
        except Exception as exc:  # a consumer that cannot load or run the file: unsupported, with its reason
            entry.update(status="unsupported", reason=f"{type(exc).__name__}: {_reason_line(str(exc))[:300]}")
        else:
            if proba.shape != keras_p.shape:
                entry.update(status="failed", reason=f"returned shape {proba.shape}, expected {keras_p.shape}")
            else:
                err = np.abs(proba.astype(np.float64) - keras_p)
                worst = float(err.max()) if np.isfinite(err).all() else float("inf")
                entry["max_abs_error_vs_keras"] = worst
                if not worst <= atol:
                    entry.update(status="failed", reason=f"max |p - p_keras| {worst:.3g} > {atol:g}")
                else:
                    entry["status"] = "ok"
        results.append(entry)
        err_text = "" if entry["max_abs_error_vs_keras"] is None else f", max |p - p_keras| {entry['max_abs_error_vs_keras']:.3g}"
        progress.log(f"  {name} {entry['version'] or ''}: {entry['status']}{err_text}"
                     + (f" ({entry['reason']})" if entry["reason"] else ""))
    return {"atol": atol, "file": model_file, "rows": int(X.shape[0]),
            "inputs": "reference.npz X (raw, right-padded rows padded with zeros)"
                      + (" and lengths" if input_spec.get("lengths") else ""),
            "results": results}


def raise_on_failure(entry: dict[str, Any]) -> None:
    """VerificationError naming every consumer whose numbers disagree with Keras (status "failed")."""
    from pipeline.errors import VerificationError

    failed = [r for r in entry["results"] if r["status"] == "failed"]
    if failed:
        raise VerificationError("model.onnx gives other numbers in another runtime: " + "; ".join(
            f"{r['runtime']} {r['version']}: {r['reason']}" for r in failed))
