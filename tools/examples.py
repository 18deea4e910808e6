"""Write every input the README's examples (and the docs pages' main examples) use: ``make examples``.

``python tools/examples.py [--out build/examples]`` writes, each file with one name and one meaning:

- ``ItalyPowerDemand_train.npz``, ``ItalyPowerDemand_test.npz``: the public UCR set (67 / 1029 series,
  T=24, F=1, labels "1" and "2" as the archive has them), read by aeon's own loader from the data
  files inside the aeon wheel (the ``ucr`` extra; nothing is downloaded). README example 1.
- ``exported_first4.npz``: ``X`` = the first four raw rows of ``exported/reference.npz`` (4, 50, 8).
  README example 2 and the Python API.
- ``exported_row0.csv``: row 0 of ``exported/reference.npz``, one timestep per line (8 comma-separated
  raw features, 50 lines), for ``gru-predict exported - --stream`` (docs/streaming.md).
- ``seq.keras``: a tiny ``Sequential([Input((20, 4)), GRU(16), Dense(1, sigmoid)])`` trained two
  epochs on seeded data, and ``seq_sample.npz``: 100 rows (``X`` (100, 20, 4), ``y``) of that data,
  the sample ``gru-export`` and ``gru-verify`` take. README example 3.

Imports: numpy; aeon (ItalyPowerDemand) and keras (seq.keras) inside the functions that need them.
Reads: exported/reference.npz. Writes: only the files above, in --out (created if missing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "examples"
SEED = 0
UCR_HINT = "pip install -e '.[ucr]' (or: make examples, which installs the ucr extra)"


def italy_power_demand(out: Path) -> list[Path]:
    """The two splits as NPZ (X (N, 24, 1), y), from aeon's bundled copy of the UCR files."""
    try:
        from aeon.datasets import load_italy_power_demand
    except ImportError:
        raise SystemExit(f"examples: ItalyPowerDemand needs aeon: {UCR_HINT}") from None
    paths = []
    for split in ("train", "test"):
        X, y = load_italy_power_demand(split=split)  # (N, channels, T), labels as strings
        path = out / f"ItalyPowerDemand_{split}.npz"
        np.savez(path, X=np.transpose(X, (0, 2, 1)).astype(np.float32), y=np.asarray(y))
        paths.append(path)
    return paths


def exported_rows(out: Path) -> list[Path]:
    """Rows of the committed exported/reference.npz: four as NPZ, the first as a stream CSV."""
    X = np.load(ROOT / "exported" / "reference.npz")["X"]
    first4 = out / "exported_first4.npz"
    np.savez(first4, X=X[:4])
    row0 = out / "exported_row0.csv"
    row0.write_text("".join(",".join(str(v) for v in step) + "\n" for step in X[0]))  # float32 repr: exact
    return [first4, row0]


def tiny_keras_model(out: Path) -> list[Path]:
    """seq.keras (GRU(16) on (20, 4), two epochs, seeded) and its sample seq_sample.npz."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(100, 20, 4)).astype(np.float32)
    y = (X[:, :10, 0].sum(axis=1) > X[:, 10:, 1].sum(axis=1)).astype(np.int64)  # early feature 0 vs late feature 1
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((20, 4)), keras.layers.GRU(16), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    model_path, sample_path = out / "seq.keras", out / "seq_sample.npz"
    model.save(model_path)
    np.savez(sample_path, X=X, y=y)
    return [model_path, sample_path]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: build/examples)")
    p.add_argument("--skip-keras", action="store_true", help="do not train seq.keras (no TensorFlow import)")
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = italy_power_demand(out) + exported_rows(out)
    if not args.skip_keras:
        written += tiny_keras_model(out)
    for path in written:
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
