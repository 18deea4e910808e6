"""``gru-predict MODEL_DIR INPUT [--output FILE]``: batch predictions from a data file.

Owns: the predict command line. Imports: the TF-free runtime only.
Reads: MODEL_DIR (exported folder) and INPUT (.npz, .npy, .csv long layout, .ts).
Writes: CSV ``id,probability,label`` to --output (atomically) or stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, TextIO

from pipeline.cli_common import run_cli
from pipeline.errors import InputError

PROG = "gru-predict"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Predict with an exported GRU classifier (onnxruntime, no TensorFlow). "
                    "Writes one CSV row per sample: id,probability,label.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported folder (e.g. exported)")
    p.add_argument("input", metavar="INPUT", help="data file: .npz (X[, lengths, ids]), .npy (X), .csv (long layout), .ts")
    p.add_argument("--output", "-o", metavar="FILE", help="write the CSV here instead of stdout")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: chosen by the runtime)")
    return p


def write_rows(fh: TextIO, ids, proba, labels) -> None:
    fh.write("id,probability,label\n")
    for i, p, lab in zip(ids, proba, labels):
        fh.write(f"{i},{float(p):.9g},{lab}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        from pipeline.datafiles import read_sequences
        from pipeline.runtime.predictor import Predictor

        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads: expected a positive integer, got {args.threads}")
        predictor = Predictor.load(args.model_dir, threads=args.threads)
        data = read_sequences(args.input)
        if data.n_features != predictor.n_features:
            raise InputError(f"{args.input}: expected {predictor.n_features} features per timestep, got {data.n_features}")
        lengths = data.lengths if (data.lengths != data.X.shape[1]).any() else None
        proba = predictor.predict_proba(data.X, lengths)
        labels = [predictor.class_names[int(p >= predictor.threshold)] for p in proba]
        if args.output:
            out = Path(args.output)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
            try:
                with os.fdopen(fd, "w", newline="") as fh:
                    write_rows(fh, data.ids, proba, labels)
                os.replace(tmp, out)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            print(f"wrote {len(proba)} predictions to {out}", file=sys.stderr)
        else:
            write_rows(sys.stdout, data.ids, proba, labels)
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
