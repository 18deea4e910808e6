"""Benchmark a token model's two kernel paths: ``python tools/bench_tokens.py [--vocab 20000 --dim 64 --hidden 64
--steps 100] [--rounds 3] [--lengths]``.

A token model (ids (B, T) int64 -> Embedding (vocab, dim) Gather -> GRU(H) -> mean over time -> Dense(1,
sigmoid)) with random weights, written with onnx.helper (no TensorFlow), run by: the fused kernel with
the Embedding folded into the first layer (each token's x.W made once, read each step: "fold"), the same
kernel gathering the Embedding rows and projecting them each step ("gather"), onnxruntime on model.onnx
(the faster of one intra-op thread and its default, per batch) and OpenVINO f32 on it (the fastest of a LATENCY and a THROUGHPUT sync request and
an AsyncInferQueue over its optimal number of requests), at B = 1, 64, 1024. The engines run in turn
within each round, the order rotating; ratios are taken within a round, then the median. Every engine's
output is checked against onnxruntime's first (the kernel's bit for bit).

``--lengths``: the variable-length form of the same model as gru-export ships an Embedding(mask_zero=True)
model (``pipeline.export.scaling.embed_preprocessing``: ids and lengths in, ids past each length padded
with 0; the GRU's sequence_lens and the mean's mask are the nonzero ids), every engine fed that same
two-input model.onnx, at B = 64, 1024, 8192 with lengths uniform in [T/4, T] (ids 1 .. vocab-1 before each
length, 0 after); the kernel runs ``run_lengths`` (gru_run_ids_lens: rows longest first, each over its
own steps).

Owns: nothing the package uses. Imports: numpy, onnx (the build extra), onnxruntime, openvino (the bench
extra, through benchmarks.peers; skipped when absent), benchmarks.throughput (the timing loop),
pipeline.runtime.fused, pipeline.export.scaling (``--lengths``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.runtime import fused  # noqa: E402
from pipeline.runtime.fused.onnx_reader import match_fused, parse_model  # noqa: E402
from pipeline.runtime.sessions import open_session  # noqa: E402
from benchmarks.peers import openvino_fastest  # noqa: E402
from benchmarks.throughput import samples_per_second  # noqa: E402

BATCHES = (1, 64, 1024)
BATCHES_LENGTHS = (64, 1024, 8192)


def token_model(vocab: int, dim: int, H: int, seed: int = 0) -> bytes:
    """model.onnx of ids (B, T) -> Gather(Embedding) -> Transpose -> GRU(H) -> ReduceMean(time) -> Gemm(1) -> Sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {"embedding": rng.standard_normal((vocab, dim)).astype(np.float32),
             "W": (rng.standard_normal((1, 3 * H, dim)) * 0.3).astype(np.float32),
             "R": (rng.standard_normal((1, 3 * H, H)) * 0.3).astype(np.float32),
             "B": (rng.standard_normal((1, 6 * H)) * 0.1).astype(np.float32),
             "axes1": np.array([1], np.int64),
             "head_W": rng.standard_normal((H, 1)).astype(np.float32), "head_b": np.array([0.1], np.float32)}
    nodes = [helper.make_node("Gather", ["embedding", "x"], ["emb"], axis=0),
             helper.make_node("Transpose", ["emb"], ["seq"], perm=[1, 0, 2]),
             helper.make_node("GRU", ["seq", "W", "R", "B"], ["Y", ""], hidden_size=H, linear_before_reset=1),
             helper.make_node("Squeeze", ["Y", "axes1"], ["y"]),
             helper.make_node("ReduceMean", ["y"], ["mean"], axes=[0], keepdims=0),
             helper.make_node("Gemm", ["mean", "head_W", "head_b"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    graph = helper.make_graph(nodes, "tokens", [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])],
                              [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_tokens")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def token_model_lengths(vocab: int, dim: int, H: int, seed: int = 0) -> bytes:
    """The variable-length form of ``token_model`` as gru-export ships an Embedding(mask_zero=True) model: ids
    (B, T) and lengths (B,) -> Where(steps < lengths, ids, 0) -> Cast(int64) -> Gather(Embedding), the nonzero
    ids' count as the GRU's sequence_lens and their mask for the mean (pipeline/export/native.py, _embedding and
    the masked average; a GRU with zero_output_for_mask=True: no Where carrying its last output) -> Dense(1,
    sigmoid). The weights are ``token_model``'s."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.export.scaling import embed_preprocessing

    proto = onnx.load_from_string(token_model(vocab, dim, H, seed))
    g = proto.graph
    g.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "zero_id"),
                          numpy_helper.from_array(np.array([0], np.int64), "axes0"),
                          numpy_helper.from_array(np.array([2], np.int64), "axes2")])
    nodes = [helper.make_node("Cast", ["x"], ["ids"], to=TensorProto.INT64),
             helper.make_node("Gather", ["embedding", "ids"], ["emb"], axis=0),             # (B, T, dim)
             helper.make_node("Equal", ["ids", "zero_id"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], ["not_pad"]),
             helper.make_node("Cast", ["not_pad"], ["mask_f"], to=TensorProto.FLOAT),      # (B, T)
             helper.make_node("ReduceSum", ["mask_f", "axes1"], ["len_f"], keepdims=0),   # (B,)
             helper.make_node("Cast", ["len_f"], ["seq_lens"], to=TensorProto.INT32),
             helper.make_node("Transpose", ["mask_f"], ["mask_tb"], perm=[1, 0]),
             helper.make_node("Unsqueeze", ["mask_tb", "axes2"], ["mask_tb1"]),            # (T, B, 1)
             helper.make_node("Transpose", ["emb"], ["seq"], perm=[1, 0, 2]),
             helper.make_node("GRU", ["seq", "W", "R", "B", "seq_lens"], ["Y", ""], hidden_size=H,
                              linear_before_reset=1),
             helper.make_node("Squeeze", ["Y", "axes1"], ["y"]),                           # (T, B, H)
             helper.make_node("Mul", ["y", "mask_tb1"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axes0"], ["total"], keepdims=0),    # (B, H)
             helper.make_node("ReduceSum", ["mask_tb1", "axes0"], ["count"], keepdims=0),  # (B, 1)
             helper.make_node("Div", ["total", "count"], ["mean"]),
             helper.make_node("Gemm", ["mean", "head_W", "head_b"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    del g.node[:]
    g.node.extend(nodes)
    return embed_preprocessing(proto, {"type": "none"}, masking=True).SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64, help="Embedding dimension (the GRU's input features)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100, help="T")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the kernel's threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.4, help="timed seconds per engine, batch and round")
    ap.add_argument("--lengths", action="store_true",
                    help="the variable-length (mask_zero) model, ids and lengths in [T/4, T], B = 64, 1024, 8192")
    args = ap.parse_args()
    data = (token_model_lengths if args.lengths else token_model)(args.vocab, args.dim, args.hidden)
    spec, why = match_fused(parse_model(data), "x", "probability", "lengths" if args.lengths else None)
    if spec is None:
        raise SystemExit(f"the kernel does not read the bench model: {why}")
    lib, why = fused.load_library()
    if lib is None:
        raise SystemExit(why)
    isa = fused.supported_isas(lib)[0]
    threads = args.threads
    t0 = time.perf_counter()
    fold = fused.FusedKernel(lib, spec, isa)  # packs the weights and makes the folded table
    made_ms = (time.perf_counter() - t0) * 1e3
    gather = fused.FusedKernel(lib, spec, isa)
    gather.token_path = "gather"
    if fold.token_path != "fold":
        raise SystemExit("the folded tables exceed the kernel's FOLD_MAX_BYTES: pick a smaller --vocab")
    sessions = {"1 thread": open_session(data, threads=1, name="bench tokens"),
                "default threads": open_session(data, threads=None, name="bench tokens")}
    sess = sessions["1 thread"]
    load = os.getloadavg()
    table_mb = args.vocab * 3 * -(-args.hidden // 16) * 16 * 4 / 2**20
    form = "ids and lengths uniform in [T/4, T] (mask_zero), " if args.lengths else ""
    print(f"token model: {form}vocab {args.vocab}, Embedding dim {args.dim}, GRU({args.hidden}), T = {args.steps}, mean, "
          f"Dense(1, sigmoid); kernel {isa} on {threads} threads, folded table {table_mb:.1f} MB (cap "
          f"{lib.gru_fold_max_bytes() / 2**20:.0f} MB; model made in {made_ms:.0f} ms); onnxruntime: "
          f"the faster of 1 thread and its default; load {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs")
    print("| B | fold samples/s | gather samples/s | onnxruntime | OpenVINO f32 | fold / gather | fold / onnxruntime "
          "| fold / OpenVINO | onnxruntime setting | OpenVINO configuration |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    rng = np.random.default_rng(1)
    T = args.steps
    for B in (BATCHES_LENGTHS if args.lengths else BATCHES):
        if args.lengths:
            lens = rng.integers(T // 4, T + 1, B).clip(1).astype(np.int64)  # (B,)
            ids = np.where(np.arange(T)[None, :] < lens[:, None], rng.integers(1, args.vocab, (B, T)), 0)
            feeds = {"x": ids, "lengths": lens}
            kernels = {"fold": lambda: fold.run_lengths(ids, lens, threads),
                       "gather": lambda: gather.run_lengths(ids, lens, threads)}
        else:
            ids = rng.integers(0, args.vocab, (B, T)).astype(np.int64)
            ids[:, :3] = 0  # padding ids
            feeds = {"x": ids}
            kernels = {"fold": lambda: fold.run(ids, threads), "gather": lambda: gather.run(ids, threads)}
        want = sess.run(None, feeds)[0].reshape(-1)
        ort_runs = {k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}
        ort_what = max(ort_runs, key=lambda k: samples_per_second(ort_runs[k], B, 0.3))  # the faster onnxruntime setting
        engines = {**kernels, "onnxruntime": ort_runs[ort_what]}
        for name in ("fold", "gather"):
            if not np.array_equal(engines[name](), want):
                raise SystemExit(f"B={B}: the kernel's {name} path differs from onnxruntime")
        ov_run, ov_what, ov_latency = openvino_fastest(data, feeds)
        if ov_run is not None:
            err = float(np.abs(np.asarray(ov_latency()).reshape(-1) - want).max())
            ov_what += f"; max |OpenVINO - onnxruntime| {err:.1e}"
            engines["openvino"] = ov_run
        rates = {k: [] for k in engines}
        for r in range(args.rounds):
            names = list(engines)[r % len(engines):] + list(engines)[:r % len(engines)]
            for k in names:
                rates[k].append(samples_per_second(engines[k], B, args.seconds))
        med = {k: float(np.median(v)) for k, v in rates.items()}

        def ratio(k: str) -> str:
            return f"{float(np.median(np.array(rates['fold']) / np.array(rates[k]))):.2f}x" if k in rates else "-"
        ov = f"{med['openvino']:,.0f}" if "openvino" in med else "-"
        print(f"| {B} | {med['fold']:,.0f} | {med['gather']:,.0f} | {med['onnxruntime']:,.0f} | {ov} | {ratio('gather')} "
              f"| {ratio('onnxruntime')} | {ratio('openvino')} | {ort_what} | {ov_what} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
