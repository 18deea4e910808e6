"""``gru-export``: a user's saved Keras classifier -> verified ONNX artifact folder.

Owns: argument parsing of gru-export. Layer: packaging. Imports: argparse and pipeline.settings at start-up (fast
``--help``); Keras and the exporter only when an export runs. Reads: the model file, the sample
file, an optional custom-objects module. Writes: ``--out`` (nothing when anything fails).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipeline import progress
from pipeline.cli_common import run_cli
from pipeline.settings import ExportConfig, VerifyConfig

PROG = "gru-export"


def parser() -> argparse.ArgumentParser:
    e, v = ExportConfig(), VerifyConfig()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export your own trained Keras 3 GRU classifier (binary, multi-class or multi-label) (.keras, or legacy .h5) to ONNX with the "
                    "native GRU op, verify Keras == onnxruntime on your sample and stress inputs, and write the "
                    "artifact folder that gru-predict and pipeline.runtime run.")
    p.add_argument("model_file", metavar="MODEL_FILE", help="the saved Keras model (.keras or .h5)")
    p.add_argument("--sample-data", metavar="FILE", required=True,
                   help="sample inputs exactly as the model takes them (.npz/.npy/.csv/.ts; NPZ 'X' (N, T, F) features "
                        "or (N, T) token ids, optional 'lengths' for right-padded rows, optional 'y' labels)")
    p.add_argument("--out", metavar="DIR", default="exported", help="artifact folder (default: exported)")
    p.add_argument("--class-names", metavar="A,B,...", help="the k class names in the order of the model's outputs "
                   "(binary: class 0, class 1; default: 0,1,...,k-1)")
    p.add_argument("--threshold", metavar="P[,P...]", help="binary: the decision threshold on p(class 1) (default 0.5); "
                   "multi-label: one threshold for every class or one per class (default 0.5); multi-class: argmax, none")
    p.add_argument("--atol", type=float, default=v.atol, metavar="A",
                   help=f"largest |p_keras - p_onnx| allowed (default {v.atol:g})")
    p.add_argument("--backend", choices=["auto", "native", "tf2onnx"], default=e.backend,
                   help=f"auto: native GRU op, else tf2onnx's Loop graph with the reason recorded (default {e.backend})")
    p.add_argument("--opset", type=int, default=e.opset, metavar="N", help=f"ONNX opset (default {e.opset})")
    p.add_argument("--logits", action="store_true", help="the model ends in Dense(1) without activation: a logit of class 1")
    p.add_argument("--custom-objects", metavar="FILE", help="a Python file defining the model's custom layers/functions")
    p.add_argument("--seed", type=int, default=0, help="seed of the verification inputs (default 0)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        progress.show_progress()
        from pipeline.errors import ConfigError

        names = None
        if args.class_names is not None:
            names = [s.strip() for s in args.class_names.split(",")]
            if len(names) < 2 or not all(names) or len(set(names)) != len(names):
                raise ConfigError(f"--class-names: expected two or more distinct names separated by commas, got "
                                  f"{args.class_names!r}")
        threshold = None
        if args.threshold is not None:
            try:
                values = [float(v) for v in args.threshold.split(",")]
            except ValueError:
                raise ConfigError(f"--threshold: expected probabilities separated by commas, got {args.threshold!r}") from None
            if not all(0 < v < 1 for v in values):
                raise ConfigError(f"--threshold: expected probabilities in (0, 1), got {args.threshold}")
            threshold = values[0] if len(values) == 1 else values
        export = ExportConfig(opset=args.opset, backend=args.backend)
        verify = VerifyConfig(atol=args.atol)
        from pipeline.settings import BuildConfig

        BuildConfig(export=export, verify=verify).validate()  # the same ranges as gru-build
        from pipeline.keras_source.tf_import import import_tensorflow

        import_tensorflow()  # its start-up notices filtered, so errors stay one line
        from pipeline.keras_source.describe import describe
        from pipeline.keras_source.load import load_keras_file
        from pipeline.packaging.own_model import export_keras_model, read_sample

        model = load_keras_file(args.model_file, args.custom_objects)
        tokens = describe(model, args.logits).input_kind == "tokens"
        X, lengths, y, feature_names = read_sample(args.sample_data, tokens)
        export_keras_model(model, X, args.out, lengths=lengths, y=y, class_names=names, threshold=threshold,
                           logits=args.logits, export=export, verify=verify, seed=args.seed,
                           source_file=args.model_file, feature_names=feature_names)
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
