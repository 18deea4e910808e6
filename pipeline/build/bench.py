"""Batch-inference benchmark: our runtime against Keras, tf.function and the tf2onnx graph.

Owns: rebuilding the Keras twin of an exported default-architecture model (weights read back
from model.onnx, so every engine runs the very same numbers), timing engines side by side in
interleaved rounds (median), checking every engine's outputs against Keras in the same run, and
the fp32 matmul roof. Imports: numpy, onnx, keras/tensorflow, tf2onnx (build stage only), and
pipeline.runtime. Reads: an exported folder. Writes: nothing (tools/bench.py writes results).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["BenchRow", "keras_twin", "matmul_roof_gflops", "bench_batches", "format_markdown"]


@dataclass
class BenchRow:
    engine: str
    batch: int
    samples_per_s: float
    latency_ms: float
    max_abs_err_vs_keras: float


def keras_twin(model_dir: Path):
    """Keras GRU(H) -> Dense(1, sigmoid) with the weights of ``model_dir/model.onnx`` (native, 1 GRU)."""
    import keras
    import onnx
    from onnx import numpy_helper

    from pipeline.runtime import Predictor

    pred = Predictor.load(model_dir)
    graph = onnx.load(str(Path(model_dir) / "model.onnx")).graph
    grus = [n for n in graph.node if n.op_type == "GRU"]
    if len(grus) != 1 or pred.masked:
        raise ValueError("the batch bench expects the default architecture: one unmasked GRU -> Dense(1)")
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    g = grus[0]
    W, R, B = (init[name][0] for name in g.input[1:4])  # (3H, F), (3H, H), (6H,)
    H = R.shape[1]
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    dW, db = init[gemm.input[1]], init[gemm.input[2]]
    lbr = next(a.i for a in g.attribute if a.name == "linear_before_reset")
    x = keras.Input((None, pred.n_features), name="x")
    gru = keras.layers.GRU(H, reset_after=bool(lbr))
    out = keras.layers.Dense(1, activation="sigmoid")(gru(x))
    model = keras.Model(x, out)
    bias = B.reshape(2, 3 * H) if lbr else B[: 3 * H]
    gru.set_weights([W.T, R.T, bias])
    model.layers[-1].set_weights([dW, db])
    return model, pred


def matmul_roof_gflops(n: int = 2048, reps: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def model_flops_per_sample(T: int, F: int, H: int) -> float:
    return 2.0 * T * 3 * H * (F + H) + 2.0 * H


def bench_batches(model_dir: Path, batches=(1, 64, 1024, 8192), rounds: int = 5,
                  min_seconds: float = 0.2, log: Callable[[str], None] = print) -> list[BenchRow]:
    """Time each engine at each batch size, interleaved; medians of ``rounds``."""
    import onnxruntime as ort
    import tensorflow as tf

    from pipeline.build.onnx_tf2onnx import export_tf2onnx
    from pipeline.preprocessing import apply_preprocessing

    model, pred = keras_twin(model_dir)
    T = int(pred.manifest.get("timesteps_trained") or 50)
    F = pred.n_features
    serve = tf.function(lambda z: model(z, training=False), input_signature=(tf.TensorSpec([None, None, F], tf.float32),))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    loop = ort.InferenceSession(export_tf2onnx(model, "x", "probability", 17).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    prep = pred.manifest["preprocessing"]
    rows: list[BenchRow] = []
    rng = np.random.default_rng(0)
    for batch in batches:
        X = rng.standard_normal((batch, T, F)).astype(np.float32)  # raw features
        Z = apply_preprocessing(X, prep)
        engines = {
            "ours (Predictor.predict_proba)": lambda: pred.predict_proba(X),
            "keras model.predict": lambda: model.predict(Z, batch_size=max(32, min(batch, 1024)), verbose=0).reshape(-1),
            "tf.function(model)": lambda: serve(Z).numpy().reshape(-1),
            "onnxruntime, tf2onnx Loop graph": lambda: loop.run(None, {"x": Z})[0].reshape(-1),
        }
        ref = np.asarray(model(Z, training=False)).reshape(-1)
        errs = {k: float(np.abs(np.asarray(f(), np.float64) - ref).max()) for k, f in engines.items()}
        times: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(rounds):
            for name, f in engines.items():
                reps, t0 = 0, time.perf_counter()
                while True:
                    f()
                    reps += 1
                    if time.perf_counter() - t0 >= min_seconds and reps >= 2:
                        break
                times[name].append((time.perf_counter() - t0) / reps)
        for name in engines:
            sec = float(np.median(times[name]))
            rows.append(BenchRow(name, batch, batch / sec, sec * 1e3, errs[name]))
            log(f"  batch {batch:5d}  {name:34s} {batch / sec:10.0f} samples/s  max err {errs[name]:.2g}")
    return rows


def format_markdown(rows: list[BenchRow], roof_samples_per_s: float) -> str:
    batches = sorted({r.batch for r in rows})
    engines = list(dict.fromkeys(r.engine for r in rows))
    get = {(r.engine, r.batch): r for r in rows}
    lines = ["| engine | " + " | ".join(f"B={b}" for b in batches) + " |", "|---" * (len(batches) + 1) + "|"]
    for e in engines:
        lines.append(f"| {e} | " + " | ".join(f"{get[e, b].samples_per_s:,.0f}" for b in batches) + " |")
    ours = engines[0]
    lines.append("| ours / best other | " + " | ".join(
        f"{get[ours, b].samples_per_s / max(get[e, b].samples_per_s for e in engines[1:]):.2f}x" for b in batches) + " |")
    lines.append("| ours / matmul roof | " + " | ".join(
        f"{get[ours, b].samples_per_s / roof_samples_per_s:.0%}" for b in batches) + " |")
    return "\n".join(lines)


def rows_as_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
