"""The fused kernel's k-way heads against its binary head: samples/s of the same GRU (the committed
model: T=50, F=8, GRU(64), average head) ending in Dense(1, sigmoid), Dense(10) + Softmax and
Dense(10, sigmoid), measured side by side in one process. The calls are interleaved: within a
round the heads take turns call by call (the order rotating), each call timed by the wall clock and
by the CPU time of the process (every thread; with --threads 1 the caller's thread does all the
work), and the ratios are taken within a round, so other jobs on a shared machine slow both sides
alike. The CPU-time rate is the steadier figure under load (time another job holds the core is not
counted). Prints per-round rates and ratios and their medians.

The k-way models are the committed model.onnx with its head replaced (onnx.helper: Gemm to 10 units
with seeded random weights, then Softmax(axis -1) or Sigmoid); before timing, the kernel's output
on 300 rows is compared with onnxruntime running that graph (max |difference| and the number of
differing values are printed: 0 where onnxruntime runs the kernels the head reproduces).

Usage: python tools/bench_kernel_classes.py [--batches 1024,64] [--rounds 7] [--seconds 0.3]
       [--threads 2] [--isa avx512] [--timesteps 50]
Needs the built kernel library, onnxruntime and onnx (the build extra) for the graph edit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K = 10


def _k_way_graph(data: bytes, k: int, activation: str, seed: int = 0) -> bytes:
    """The committed graph with its Gemm -> Sigmoid head replaced by Gemm to k units -> ``activation``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_model_from_string(data)
    g = m.graph
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    inits = {t.name: t for t in g.initializer}
    w = numpy_helper.to_array(inits[gemm.input[1]])  # (D*H, 1)
    rng = np.random.default_rng(seed)
    new_w = (rng.standard_normal((w.shape[0], k)) * 0.5).astype(np.float32)
    new_b = (0.1 * rng.standard_normal(k)).astype(np.float32)
    inits[gemm.input[1]].CopyFrom(numpy_helper.from_array(new_w, gemm.input[1]))
    inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(new_b, gemm.input[2]))
    sig = next(n for n in g.node if n.op_type == "Sigmoid" and n.input[0] == gemm.output[0])
    act = helper.make_node("Softmax", list(sig.input), list(sig.output), axis=-1) if activation == "softmax" else sig
    nodes = [act if n is sig else n for n in g.node]
    del g.node[:]
    g.node.extend(nodes)
    out = g.output[0]
    old = out.name
    out.CopyFrom(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k]))
    for n in g.node:
        n.output[:] = ["probabilities" if o == old else o for o in n.output]
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _round(runs: dict, X: np.ndarray, seconds: float, first: int) -> dict[str, tuple[float, float]]:
    """{head: (wall samples/s, CPU samples/s)}: the heads called in turn (starting with head number
    ``first``) until each has run for at least ``seconds`` of wall time."""
    names = list(runs)
    names = names[first % len(names):] + names[:first % len(names)]
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    calls = 0
    for n in names:  # warm-up
        runs[n](X)
    while min(wall.values()) < seconds:
        for n in names:
            w0, c0 = time.perf_counter(), time.process_time()
            runs[n](X)
            cpu[n] += time.process_time() - c0
            wall[n] += time.perf_counter() - w0
        calls += 1
    return {n: (calls * len(X) / wall[n], calls * len(X) / max(cpu[n], 1e-9)) for n in runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "exported"))
    ap.add_argument("--batches", default="1024,64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="timing per head per round and batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", default=None, help="a kernel variant (default: the best this CPU runs)")
    ap.add_argument("--timesteps", type=int, default=50,
                    help="T of the timed rows (T=1 leaves the GRU one step: the head's own cost shows)")
    args = ap.parse_args(argv)

    from pipeline.runtime import fused
    from pipeline.runtime.fused.onnx_reader import match_fused, parse_model
    from pipeline.runtime.sessions import open_session

    lib, why = fused.load_library()
    if lib is None:
        print(f"no kernel library: {why}")
        return 1
    isa = args.isa or [i for i in fused.supported_isas(lib) if i in fused.AUTO_ISAS][0]
    binary = (Path(args.model_dir) / "model.onnx").read_bytes()
    graphs = {"binary": (binary, "probability"),
              f"softmax k={K}": (_k_way_graph(binary, K, "softmax"), "probabilities"),
              f"sigmoid k={K}": (_k_way_graph(binary, K, "sigmoid"), "probabilities")}
    kernels = {}
    rng = np.random.default_rng(0)
    X_check = rng.standard_normal((300, 50, 8)).astype(np.float32) * 2
    print(f"kernel {isa}, {args.threads} thread(s); softmax head reproduces MLAS' "
          f"{'AVX512F' if lib.gru_softmax_kind(None, -1) == 1 else 'FMA3'} kernels; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name, (data, out) in graphs.items():
        spec, why = match_fused(parse_model(data), "x", out)
        assert spec is not None, f"{name}: {why}"
        kernels[name] = fused.FusedKernel(lib, spec, isa)
        want = open_session(data, name=name).run(None, {"x": X_check})[0]
        got = kernels[name].run(X_check, args.threads).reshape(want.shape)
        print(f"  {name:14s} vs onnxruntime on 300 rows: max |diff| {np.abs(got.astype(np.float64) - want).max():.3g}, "
              f"{int((got != want).sum())} of {want.size} values differ")
    names = list(kernels)
    runs = {n: (lambda Z, k=kernels[n]: k.run(Z, args.threads)) for n in names}
    for B in (int(b) for b in args.batches.split(",")):
        X = rng.standard_normal((B, args.timesteps, 8)).astype(np.float32)
        rounds = [_round(runs, X, args.seconds, r) for r in range(args.rounds)]
        for clock, i in (("wall", 0), ("CPU", 1)):
            print(f"\nB={B}, T={args.timesteps}, F=8, GRU(64) avg head, {args.threads} thread(s): samples per {clock} second, per round")
            for n in names:
                v = [r[n][i] for r in rounds]
                print(f"  {n:14s} " + " ".join(f"{x:8,.0f}" for x in v) + f"   median {statistics.median(v):,.0f}")
            for n in names[1:]:
                ratios = [r[n][i] / r["binary"][i] for r in rounds]
                print(f"  {n} / binary ({clock}): " + " ".join(f"{x:.3f}" for x in ratios) +
                      f"   median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
