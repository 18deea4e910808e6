"""Batch-1 latency of the native GRU graph against tf2onnx's Loop graph, for docs/export-coverage.md.

Owns: that one timing (interleaved rounds, median). Imports: numpy, keras, pipeline.export (both
emitters), pipeline.training.model, coverage_cases (tests/coverage_cases.py: random weights, runners;
tools/coverage_table.py, the one caller, puts tests/ on ``sys.path``).
Reads/writes: nothing.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from coverage_cases import INPUT_NAME, OPSET, keras_run, ort_session, randomize_weights, run_onnx

__all__ = ["latency_native_vs_tf2onnx"]


def latency_native_vs_tf2onnx(units: int = 64, timesteps: int = 50, features: int = 8, rounds: int = 15,
                              calls_per_round: int = 20, seed: int = 0) -> dict[str, float]:
    """Median batch-1 latency (ms per call) of the default-size model: native GRU graph vs tf2onnx Loop graph.

    Both graphs come from the same random-weight model and run with one intra-op thread; rounds
    alternate between the two so machine load affects both alike.
    """
    from pipeline.settings import ModelConfig
    from pipeline.training.model import build_model
    from pipeline.export.native import OUTPUT_NAME, export_native
    from pipeline.export.tf2onnx_fallback import export_tf2onnx

    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(units=units), features, masking=False)
    randomize_weights(model, seed)
    sessions = {
        "native GRU op": ort_session(export_native(model, INPUT_NAME, OPSET)),
        "tf2onnx Loop": ort_session(export_tf2onnx(model, INPUT_NAME, OUTPUT_NAME, OPSET)),
    }
    X = np.random.default_rng(seed).standard_normal((1, timesteps, features)).astype(np.float32)  # (1, T, F)
    ref = keras_run(model, X)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    errors: dict[str, float] = {}
    for name, sess in sessions.items():  # warm-up + correctness
        for _ in range(5):
            p = run_onnx(sess, X)
        errors[name] = float(np.abs(p - ref).max())
    for r in range(rounds):
        order = list(sessions.items()) if r % 2 == 0 else list(sessions.items())[::-1]
        for name, sess in order:
            start = time.perf_counter()
            for _ in range(calls_per_round):
                run_onnx(sess, X)
            times[name].append((time.perf_counter() - start) / calls_per_round * 1e3)
    out = {f"{name} ms": statistics.median(v) for name, v in times.items()}
    out.update({f"{name} max abs error": e for name, e in errors.items()})
    out["speed-up"] = out["tf2onnx Loop ms"] / out["native GRU op ms"]
    return out
