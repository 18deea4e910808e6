"""Batch-inference benchmark: our runtime against Keras, tf.function, the tf2onnx graph and peers.

Owns: rebuilding the Keras model of an exported default-architecture model (weights read back
from model.onnx, so every engine runs the very same numbers), timing engines side by side in
interleaved rounds (median), checking every engine's outputs against Keras in the same run, and
the fp32 matmul roof. The optional peers (OpenVINO, LiteRT) come from benchmarks.peers; ratios,
targets, markdown and plot from benchmarks.summary; cold start and install size from benchmarks.startup.
Imports: numpy, onnx, keras/tensorflow, tf2onnx (build stage only), pipeline.runtime (the Predictor;
sessions.open_session for the tf2onnx graph's session).
Reads: an exported folder. Writes: nothing (tools/bench.py writes results).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["BenchRow", "OURS", "OURS_UNROLLED", "OURS_UNFUSED", "keras_rebuild", "seconds_per_call", "matmul_roof_gflops",
           "model_flops_per_sample", "bench_batches", "rows_as_dicts"]

OURS = "ours (Predictor.predict_proba)"
OURS_UNROLLED = "ours, graph='unrolled'"  # Predictor.load(..., graph="unrolled"): the throughput choice
# Predictor.load(..., fused=False): the defaults without the fused GRU kernel (onnxruntime graphs only)
OURS_UNFUSED = "ours, unfused (fused=False)"


@dataclass
class BenchRow:
    engine: str
    batch: int
    samples_per_s: float
    latency_ms: float  # wall time of one call on the whole batch
    max_abs_err_vs_keras: float
    setting: str = ""  # how the engine was run, when it has a choice (peers)


def keras_rebuild(model_dir: Path):
    """Keras GRU(H) -> [mean or max over time] -> Dense(1, sigmoid) with the weights of
    ``model_dir/model.onnx`` (native, 1 GRU; the pooling is read off the graph's ReduceMean/ReduceMax)."""
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
    ops = {n.op_type for n in graph.node}
    pool = {"ReduceMean": keras.layers.GlobalAveragePooling1D, "ReduceMax": keras.layers.GlobalMaxPooling1D}
    heads = [layer for op, layer in pool.items() if op in ops]
    x = keras.Input((None, pred.n_features), name="x")
    gru = keras.layers.GRU(H, reset_after=bool(lbr), return_sequences=bool(heads))
    h = gru(x)  # (batch, H), or (batch, time, H) before the pooling
    if heads:
        h = heads[0]()(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(x, out)
    bias = B.reshape(2, 3 * H) if lbr else B[: 3 * H]
    gru.set_weights([W.T, R.T, bias])
    model.layers[-1].set_weights([dW, db])
    return model, pred


def seconds_per_call(run: Callable[[], object], min_seconds: float) -> float:
    """Wall seconds per call of ``run``, called repeatedly until ``min_seconds`` passed (at least twice)."""
    reps, t0 = 0, time.perf_counter()
    while True:
        run()
        reps += 1
        if time.perf_counter() - t0 >= min_seconds and reps >= 2:
            return (time.perf_counter() - t0) / reps


def samples_per_second(run: Callable[[], object], batch: int, min_seconds: float) -> float:
    """Samples per wall second of ``run`` on a batch of ``batch`` rows, after one untimed call."""
    run()
    return batch / seconds_per_call(run, min_seconds)


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
                  min_seconds: float = 0.2, log: Callable[[str], None] = print,
                  peers: Sequence = (), rebuilt=None) -> list[BenchRow]:
    """Time each engine at each batch size, interleaved; medians of ``rounds``.

    Args:
        peers: bench_peers.Peer objects; each is prepared per batch on the same inputs as the
            Keras reference (raw for a peer on model.onnx, else preprocessed), then timed in the
            same interleaved rounds.
        rebuilt: ``keras_rebuild(model_dir)`` if the caller already built it (the peers need it too).
    """
    import tensorflow as tf

    from pipeline.export.tf2onnx_fallback import export_tf2onnx
    from pipeline.preprocessing import apply_preprocessing
    from pipeline.runtime.sessions import open_session

    model, pred = rebuilt or keras_rebuild(model_dir)
    T = int(pred.manifest.get("timesteps_trained") or 50)
    F = pred.n_features
    serve = tf.function(lambda z: model(z, training=False), input_signature=(tf.TensorSpec([None, None, F], tf.float32),))
    # onnxruntime's default intra-op threads (one per physical core): the peer as users run it
    loop = open_session(export_tf2onnx(model, "x", "probability", 17).SerializeToString(), threads=None,
                        name="tf2onnx Loop graph")
    prep = pred.manifest["preprocessing"]
    from pipeline.runtime import Predictor

    unrolled = None
    if (pred.manifest.get("unrolled") or {}).get("supported"):
        unrolled = Predictor.load(model_dir, graph="unrolled")
    unfused = Predictor.load(model_dir, fused=False)
    fused = pred.debug_info()["fused"]
    check = fused["checks"].get(fused["isa"] or "", {})
    log(f"  ours: fused GRU kernel {fused['isa']}, self-check max |kernel - model.onnx| "
        f"{check.get('max_abs_vs_model_onnx', float('nan')):.2g} on {check.get('rows')} rows"
        if fused["used"] else f"  ours: fused GRU kernel not used: {fused['reason']}")
    rows: list[BenchRow] = []
    rng = np.random.default_rng(0)
    for batch in batches:
        X = rng.standard_normal((batch, T, F)).astype(np.float32)  # raw features
        Z = apply_preprocessing(X, prep)
        engines = {
            OURS: lambda: pred.predict_proba(X),
            "keras model.predict": lambda: model.predict(Z, batch_size=max(32, min(batch, 1024)), verbose=0).reshape(-1),
            "tf.function(model)": lambda: serve(Z).numpy().reshape(-1),
            "onnxruntime, tf2onnx Loop graph": lambda: loop.run(None, {"x": Z})[0].reshape(-1),
        }
        engines[OURS_UNFUSED] = lambda: unfused.predict_proba(X)
        if unrolled is not None:
            engines[OURS_UNROLLED] = lambda: unrolled.predict_proba(X)
        settings = {}
        for peer in peers:
            engines[peer.name], settings[peer.name] = peer.prepare(X if peer.raw_input else Z)
        ref = np.asarray(model(Z, training=False)).reshape(-1)
        errs = {k: float(np.abs(np.asarray(f(), np.float64) - ref).max()) for k, f in engines.items()}
        times: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(rounds):
            for name, f in engines.items():
                times[name].append(seconds_per_call(f, min_seconds))
        for name in engines:
            sec = float(np.median(times[name]))
            rows.append(BenchRow(name, batch, batch / sec, sec * 1e3, errs[name], settings.get(name, "")))
            log(f"  batch {batch:5d}  {name:34s} {batch / sec:10.0f} samples/s  max err {errs[name]:.2g}"
                + (f"  [{settings[name]}]" if name in settings else ""))
    return rows


def rows_as_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
