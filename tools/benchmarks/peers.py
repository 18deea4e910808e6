"""Benchmark peers beyond onnxruntime: OpenVINO (f32) and LiteRT + XNNPACK (fixed batch).

Owns: making each optional peer runnable for one batch of inputs (raw for OpenVINO on model.onnx,
which scales them itself; scaled for LiteRT on the Keras twin), in the setting
where it is fastest, and saying why a peer is skipped. A peer is skipped (with a note, not an
error) when its package is missing; once installed, any failure is a real error.

- OpenVINO reads our native-GRU ``model.onnx`` (it cannot read the tf2onnx ``Loop`` graph) with
  ``INFERENCE_PRECISION_HINT=f32`` (the default on bf16-capable CPUs is bf16, error ~8e-4).
  Per batch it compiles a static-shape model under the LATENCY and the THROUGHPUT hint, plus,
  when THROUGHPUT asks for several infer requests, an ``AsyncInferQueue`` that splits the batch
  evenly across them and (large batches) one that feeds them 64-row jobs; a short calibration
  picks the fastest, which is the one timed and reported (with the others' calibration numbers).
  ``openvino_fastest`` makes the same choice (without the 64-row jobs) for a graph of any inputs, e.g. a
  lengths or token model (tools/bench_lengths.py, tools/bench_tokens.py).
- LiteRT runs a ``.tflite`` converted per batch size from a concrete function of the Keras rebuilt
  with a fully static input (batch, T, F) and frozen weights (without freezing, the GRU's While
  body reads resource variables the interpreter cannot resolve). The converter is restricted to
  TFLITE_BUILTINS, so a graph needing Flex/SELECT_TF ops fails loudly instead of converting;
  the Keras 3 GRU becomes a builtin WHILE (unrolling also works but converts ~10x slower and
  runs no faster). Interpreter with its default XNNPACK CPU delegate, one thread per usable CPU.

Imports: numpy, benchmarks.throughput (the timing loop), pipeline.runtime.sessions
(usable_cpus); openvino, ai_edge_litert, tensorflow (lazily, each only for its peer).
Reads: ``model.onnx``. Writes: one ``.tflite`` per batch size into a caller-given temp dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.throughput import seconds_per_call
from pipeline.runtime.sessions import usable_cpus

__all__ = ["Peer", "OPENVINO", "LITERT", "available_peers"]

OPENVINO = "OpenVINO f32, native GRU graph"
LITERT = "LiteRT + XNNPACK, fixed batch"
INSTALL_HINT = "pip install -e '.[bench]'"
QUEUE_ROWS = 64  # OpenVINO async jobs of this many rows are also tried for large batches

Run = Callable[[], np.ndarray]


@dataclass
class Peer:
    """``prepare(Z)`` -> (run, setting): ``run()`` returns the (B,) probabilities for ``Z`` (B, T, F).

    ``raw_input``: Z are raw features (a peer running our model.onnx, which scales them itself);
    otherwise Z are the scaled features the Keras twin takes.
    """

    name: str
    prepare: Callable[[np.ndarray], tuple[Run, str]]
    info: dict = field(default_factory=dict)
    raw_input: bool = False


def _seconds_per_call(run: Run, seconds: float, rounds: int = 3) -> float:
    """Median over ``rounds`` of bench.seconds_per_call, after one untimed call."""
    run()
    return float(np.median([seconds_per_call(run, seconds) for _ in range(rounds)]))


# ------------------------------------------------------------------------------------ OpenVINO
def openvino_peer(model_path: Path, calib_seconds: float = 0.2) -> Peer:
    """OpenVINO CPU, f32, on ``model_path``; per batch the fastest of LATENCY / THROUGHPUT / async queue."""
    import openvino as ov

    core = ov.Core()

    def compile_(shape, hint: str):
        m = core.read_model(str(model_path))
        m.reshape({m.inputs[0].get_any_name(): shape})
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint})

    def sync(cm) -> Run:
        req = cm.create_infer_request()
        return lambda Z: req.infer({0: Z}, share_inputs=True)[0].reshape(-1)

    def queued(cm, n: int, rows: int) -> Run:
        q = ov.AsyncInferQueue(cm, n)

        def run(Z):
            out = np.empty(len(Z), np.float32)

            def done(request, sl):
                out[sl] = request.get_output_tensor(0).data.reshape(-1)

            q.set_callback(done)
            for s in range(0, len(Z), rows):
                q.start_async({0: Z[s:s + rows]}, userdata=slice(s, s + rows), share_inputs=True)
            q.wait_all()
            return out

        return run

    def prepare(Z: np.ndarray) -> tuple[Run, str]:
        B, T, F = Z.shape
        cands: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        cands[f"LATENCY hint, 1 sync request, static shape {B}"] = sync(compile_([B, T, F], "LATENCY"))
        tput = compile_([B, T, F], "THROUGHPUT")
        cands[f"THROUGHPUT hint, 1 sync request, static shape {B}"] = sync(tput)
        n = int(tput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        # the batch split evenly across the optimal number of requests, and (large batches) in
        # QUEUE_ROWS-row jobs over those requests; static chunk shape when the rows divide B
        splits = ({-(-B // n), QUEUE_ROWS} if B >= 4 * n * QUEUE_ROWS else {-(-B // n)}) if n > 1 and B > 1 else set()
        for rows in sorted(splits, reverse=True):
            static = B % rows == 0
            cm = compile_([rows, T, F] if static else [-1, T, F], "THROUGHPUT")
            cands[f"THROUGHPUT hint, AsyncInferQueue of {n} requests, {-(-B // rows)} jobs x {rows} rows, "
                  f"{'static' if static else 'dynamic'} shape"] = queued(cm, n, rows)
        Zc = np.ascontiguousarray(Z, np.float32)
        timed = {k: _seconds_per_call(lambda f=f: f(Zc), calib_seconds) for k, f in cands.items()}
        best = min(timed, key=timed.get)
        peer.info.setdefault("calibration_samples_per_s", {})[B] = {k: B / v for k, v in timed.items()}
        f = cands[best]
        return (lambda: f(Zc)), f"{best}, f32, OpenVINO {ov.__version__.split('-')[0]}"

    peer = Peer(OPENVINO, prepare, raw_input=True)  # model.onnx takes raw features
    return peer


def openvino_fastest(model: bytes, feeds: dict[str, np.ndarray]):
    """(run, description, LATENCY sync run) of the fastest OpenVINO f32 configuration on this batch of a graph
    with any inputs (``feeds``: each graph input's array, batch first; static shapes compiled for it), or
    (None, why, None) when OpenVINO is not installed. Candidates: LATENCY and THROUGHPUT sync, and an
    AsyncInferQueue splitting the batch evenly over THROUGHPUT's infer requests; 0.3 s of calls each."""
    try:
        import openvino as ov
    except ImportError:
        return None, "OpenVINO not installed", None
    core = ov.Core()
    B = len(next(iter(feeds.values())))

    def compile_(rows: int, hint: str):
        m = core.read_model(model)
        m.reshape({k: [rows, *v.shape[1:]] for k, v in feeds.items()})
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint})

    cands = {}
    for hint in ("LATENCY", "THROUGHPUT"):
        req = compile_(B, hint).create_infer_request()
        cands[f"{hint} sync"] = lambda req=req: req.infer(feeds, share_inputs=True)[0]
    n = int(compile_(B, "THROUGHPUT").get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    if n > 1 and B % n == 0:
        rows = B // n
        q = ov.AsyncInferQueue(compile_(rows, "THROUGHPUT"), n)

        def queued():
            for s in range(0, B, rows):
                q.start_async({k: v[s:s + rows] for k, v in feeds.items()}, share_inputs=True)
            q.wait_all()
        cands[f"THROUGHPUT, AsyncInferQueue {n} x {rows} rows"] = queued
    timed = {k: _seconds_per_call(f, 0.3, rounds=1) for k, f in cands.items()}
    best = min(timed, key=timed.get)
    return cands[best], f"{best}, f32, OpenVINO {ov.__version__.split('-')[0]}", cands["LATENCY sync"]


# -------------------------------------------------------------------------------------- LiteRT


def tflite_fixed_batch(model, batch: int, T: int, F: int) -> bytes:
    """Convert a Keras model to a builtin-ops-only .tflite with a static (batch, T, F) input."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda z: model(z, training=False)).get_concrete_function(
        tf.TensorSpec([batch, T, F], tf.float32))
    frozen = convert_variables_to_constants_v2(fn)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex / SELECT_TF_OPS
    return conv.convert()


def litert_peer(model, T: int, F: int, tmp_dir: Path) -> Peer:
    """LiteRT interpreter (default XNNPACK delegate) on a per-batch .tflite converted from ``model``."""
    from ai_edge_litert.interpreter import Interpreter

    threads = usable_cpus()

    def prepare(Z: np.ndarray) -> tuple[Run, str]:
        B = len(Z)
        path = Path(tmp_dir) / f"rebuilt_b{B}.tflite"
        path.write_bytes(tflite_fixed_batch(model, B, T, F))
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        ops = sorted({d["op_name"] for d in it._get_ops_details()})
        bad = [o for o in ops if o.startswith("Flex") or o == "CUSTOM"]
        if bad:
            raise RuntimeError(f"{path.name}: expected builtin ops only, got {bad}")
        peer.info.setdefault("ops", {})[B] = ops
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        Zc = np.ascontiguousarray(Z, np.float32)

        def run():
            it.set_tensor(i, Zc)
            it.invoke()
            return it.get_tensor(o).reshape(-1)

        return run, (f"num_threads={threads}, default XNNPACK delegate, batch-{B} .tflite, "
                     f"builtin ops ({', '.join(ops)})")

    peer = Peer(LITERT, prepare)
    return peer


def available_peers(model, model_path: Path, T: int, F: int, tmp_dir: Path, calib_seconds: float = 0.2,
                    log: Callable[[str], None] = print) -> tuple[list[Peer], dict[str, str]]:
    """The installed peers, and {peer name: why it is skipped} for the missing ones."""
    peers, skipped = [], {}
    for name, module, make in ((OPENVINO, "openvino", lambda: openvino_peer(model_path, calib_seconds)),
                               (LITERT, "ai_edge_litert", lambda: litert_peer(model, T, F, tmp_dir))):
        if find_spec(module) is None:
            skipped[name] = f"package {module} is not installed ({INSTALL_HINT})"
            log(f"note: skipping peer {name}: {skipped[name]}")
        else:
            peers.append(make())
    return peers, skipped
