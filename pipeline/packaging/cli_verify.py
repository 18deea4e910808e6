"""``gru-verify``: does the ONNX we ship still equal our Keras model? Exit 0 yes, 5 no.

Owns: argument parsing of gru-verify. Layer: packaging. Imports: argparse at start-up; Keras and the runtime only when
a check runs. Reads: MODEL_DIR, the Keras model file, an optional data file. Writes: nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipeline import progress
from pipeline.cli_common import run_cli

PROG = "gru-verify"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Re-check a shipped artifact against its Keras model on the "
                                "artifact's reference inputs (and --data); prints the per-family table; exit 0 when "
                                "they agree, 5 when they do not.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the artifact folder (manifest.json, model.onnx, reference.npz)")
    p.add_argument("--keras", metavar="MODEL_FILE", required=True, help="the Keras model file (.keras or .h5)")
    p.add_argument("--data", metavar="FILE", help="more inputs to compare on, in any supported format")
    p.add_argument("--atol", type=float, metavar="A", help="tolerance (default: the one the artifact was verified with)")
    p.add_argument("--custom-objects", metavar="FILE", help="a Python file defining the model's custom objects")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        progress.show_progress()
        from pipeline.keras_source.tf_import import import_tensorflow

        import_tensorflow()  # its start-up notices filtered, so errors stay one line
        from pipeline.keras_source.load import load_keras_file
        from pipeline.packaging.recheck import recheck

        model = load_keras_file(args.keras, args.custom_objects)
        print(recheck(args.model_dir, model, args.data, args.atol))
        print(f"{args.model_dir} equals {args.keras}")
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
