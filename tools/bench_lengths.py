"""Benchmark variable-length batches: ``python tools/bench_lengths.py [MODEL_DIR] [--rounds 5]``.

The fused kernel (``Predictor.predict_proba(X, lengths)``, rows sorted longest first inside it), the
same Predictor on onnxruntime (``fused=False``) and OpenVINO f32 on the same two-input model.onnx
(x and lengths; the fastest of a LATENCY and a THROUGHPUT sync request and an AsyncInferQueue over the
optimal number of requests), at B = 64, 1024, 8192 with lengths uniform in [T/4, T]. The engines run
in turn within each round, the order rotating; ratios are taken within a round, then the median.
The share of the sgemm roof counts the GRU's FLOPs of each row's real steps only.

MODEL_DIR: a variable-length export (a ``lengths`` input); without it, the models of ``--models`` (T=50,
F=8, random weights; default all of ``MODELS``: a GRU(64) average model, a Bidirectional(GRU(64)) average
model and a GRU(64) last-state model) are exported to a temporary folder (needs TensorFlow/Keras), one
table each.
Owns: nothing the package uses. Imports: numpy, the runtime, openvino, benchmarks.throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline.runtime import Predictor  # noqa: E402
from benchmarks.peers import openvino_fastest  # noqa: E402
from benchmarks.throughput import matmul_roof_gflops, samples_per_second  # noqa: E402

BATCHES = (64, 1024, 8192)
# the models built without MODEL_DIR: name -> what follows Masking(PAD_VALUE), as a function of keras and H
MODELS = {
    "mean": lambda k, H: [k.layers.GRU(H, return_sequences=True), k.layers.GlobalAveragePooling1D()],
    "bidirectional-mean": lambda k, H: [k.layers.Bidirectional(k.layers.GRU(H, return_sequences=True)),
                                        k.layers.GlobalAveragePooling1D()],
    "last": lambda k, H: [k.layers.GRU(H)],
}


def _build(out: Path, kind: str = "mean", T: int = 50, F: int = 8, H: int = 64) -> Path:
    """A variable-length export: Masking(PAD_VALUE) -> MODELS[kind] (GRU(H) layers, the mean over real steps or
    the last state) -> Dense(1, sigmoid)."""
    import keras

    from pipeline.packaging import cli_export
    from pipeline.training.model import PAD_VALUE

    keras.utils.set_random_seed(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input((None, F))
    x = keras.layers.Masking(mask_value=PAD_VALUE)(inputs)
    for layer in MODELS[kind](keras, H):
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, T, F)).astype(np.float32)
    lens = rng.integers(T // 4, T + 1, 64)
    for i, n in enumerate(lens):
        X[i, n:] = 0.0
    model.save(out.with_suffix(".keras"))
    np.savez(out.with_name("sample.npz"), X=X, lengths=lens, y=np.arange(64) % 2)
    stdout, sys.stdout = sys.stdout, sys.stderr  # keep the export log out of the table
    try:
        code = cli_export.main([str(out.with_suffix(".keras")), "--sample-data", str(out.with_name("sample.npz")),
                                "--out", str(out)])
    finally:
        sys.stdout = stdout
    if code != 0:
        raise SystemExit(f"export failed ({code})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.4, help="timed seconds per engine, batch and round")
    ap.add_argument("--models", default=",".join(MODELS), help=f"without MODEL_DIR: which of {', '.join(MODELS)}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = ([Path(args.model_dir)] if args.model_dir else
                   [_build(Path(tmp) / kind / "var_model", kind) for kind in args.models.split(",")])
        for folder in folders:
            _bench(folder, args)
    return 0


def _bench(folder: Path, args) -> None:
    """One model's table: the kernel, the Predictor on onnxruntime and OpenVINO f32 at each of BATCHES."""
    ours, unfused = Predictor.load(folder), Predictor.load(folder, fused=False)
    if ours.lengths_name is None:
        raise SystemExit(f"{folder}: not a variable-length model (no lengths input)")
    F, T = ours.n_features, 50
    roof = matmul_roof_gflops()
    spec = ours._fused().spec if ours._fused() is not None else None
    flops_step = (sum(2.0 * 3 * la.directions * la.hidden * (la.features + la.hidden) for la in spec.layers)
                  if spec else None)
    load = os.getloadavg()[0]
    lines = ["| B | ours (kernel) samples/s | ours unfused | OpenVINO f32 | ours / OpenVINO (median of rounds) | "
             "ours / unfused | of sgemm roof | OpenVINO configuration |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    rng = np.random.default_rng(1)
    for B in BATCHES:
        X = rng.standard_normal((B, T, F)).astype(np.float32)
        L = rng.integers(T // 4, T + 1, B).astype(np.int64)  # uniform in [T/4, T]
        for i, n in enumerate(L):
            X[i, n:] = 0.0
        ov_run, ov_what, _ = openvino_fastest((folder / "model.onnx").read_bytes(), {"x": X, "lengths": L})
        if ov_run is None:
            raise SystemExit(f"bench_lengths compares with OpenVINO: {ov_what} (pip install -e '.[bench]')")
        engines = {"ours": lambda: ours.predict_proba(X, lengths=L),
                   "unfused": lambda: unfused.predict_proba(X, lengths=L), "openvino": ov_run}
        rates = {k: [] for k in engines}
        for r in range(args.rounds):
            names = list(engines)[r % 3:] + list(engines)[:r % 3]
            for k in names:
                rates[k].append(samples_per_second(engines[k], B, args.seconds))
        med = {k: float(np.median(v)) for k, v in rates.items()}
        vs_ov = float(np.median(np.array(rates["ours"]) / np.array(rates["openvino"])))
        vs_un = float(np.median(np.array(rates["ours"]) / np.array(rates["unfused"])))
        lines.append((B, med, vs_ov, vs_un, float(L.mean()), ov_what))
    roof = max(roof, matmul_roof_gflops())  # the best of before and after: a shared machine's roof moves
    name = folder.name if args.model_dir else folder.parent.name
    print(f"\nmodel {name}: kernel {ours.debug_info()['fused']['isa']} "
          f"({ours.debug_info()['fused']['reason'] or 'used'}), {ours.workers} threads; sgemm roof {roof:.0f} "
          f"GFLOP/s; load {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("\n".join(lines[:2]))
    for B, med, vs_ov, vs_un, mean_len, ov_what in lines[2:]:
        roof_share = med["ours"] * flops_step * mean_len / (roof * 1e9) if flops_step else float("nan")
        print(f"| {B} | {med['ours']:,.0f} | {med['unfused']:,.0f} | {med['openvino']:,.0f} | {vs_ov:.2f}x | "
              f"{vs_un:.2f}x | {roof_share:.0%} | {ov_what} |")


if __name__ == "__main__":
    sys.exit(main())
