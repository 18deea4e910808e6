"""``gru-build``: train on the default task or a user's data, export, verify, publish.

Owns: argument parsing and mapping flags onto ``BuildConfig``. Imports: argparse and the config
module at start-up; the heavy stages are imported only when a build runs (fast ``--help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

from pipeline.cli_common import run_cli

PROG = "gru-build"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a Keras GRU binary classifier, export it to ONNX, verify Keras == onnxruntime, "
                    "and write the artifact folder. With no arguments: the embedded default task -> exported/.",
    )
    p.add_argument("--data", metavar="FILE", help="training data (.npz, .csv long layout, .ts, .npy not allowed: needs labels)")
    p.add_argument("--test-data", metavar="FILE", help="held-out test data; default: a stratified split of --data")
    p.add_argument("--out", metavar="DIR", help="artifact folder (default: exported)")
    p.add_argument("--config", metavar="FILE", help="TOML file with any setting; flags override it")
    p.add_argument("--seed", type=int)
    g = p.add_argument_group("model")
    g.add_argument("--units", type=int, help="GRU units per layer (default 64)")
    g.add_argument("--layers", type=int, help="stacked GRU layers (default 1)")
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--merge-mode", choices=["concat", "sum", "ave", "mul"])
    g.add_argument("--reset-after", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--use-bias", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--go-backwards", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--masking", action=argparse.BooleanOptionalAction, default=None,
                   help="Masking layer for right-padded variable-length data (default: on when lengths vary)")
    g.add_argument("--activation", choices=["tanh", "relu", "sigmoid", "hard_sigmoid"])
    g.add_argument("--recurrent-activation", choices=["sigmoid", "hard_sigmoid", "tanh", "relu"])
    g.add_argument("--dropout", type=float)
    g.add_argument("--recurrent-dropout", type=float)
    g.add_argument("--head", choices=["last", "avg", "max"], help="mean of the GRU outputs over time (default avg), last state, or max")
    g.add_argument("--recurrent-norm-max", type=float, metavar="S",
                   help="cap on the recurrent kernel's spectral norm during training (default 2.0; 0 = off)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--patience", type=int)
    g.add_argument("--min-steps", type=int, help="auto epochs: at least this many optimizer updates (default 3000)")
    g.add_argument("--class-weight", choices=["balanced", "none"])
    g.add_argument("--conditioning-retries", type=int, metavar="N",
                   help="retrain up to N times with a halved recurrent cap when verification refuses the model (default 1)")
    g.add_argument("--threshold", type=float, help="decision threshold; default: chosen on validation data")
    g = p.add_argument_group("default task")
    g.add_argument("--samples", type=int, help="default task: number of sequences (default 6000)")
    g.add_argument("--timesteps", type=int, help="default task: timesteps (default 50)")
    g.add_argument("--features", type=int, help="default task: features (default 8)")
    g = p.add_argument_group("export")
    g.add_argument("--backend", choices=["auto", "native", "tf2onnx"])
    g.add_argument("--opset", type=int)
    g.add_argument("--atol", type=float, help="equivalence tolerance on probabilities (default 1e-5)")
    return p


_FLAG_TO_KEY = {
    "seed": ("seed",), "out": ("out",), "data": ("data", "path"), "test_data": ("data", "test_path"),
    "samples": ("data", "n_samples"), "timesteps": ("data", "timesteps"), "features": ("data", "features"),
    "units": ("model", "units"), "layers": ("model", "layers"), "bidirectional": ("model", "bidirectional"),
    "merge_mode": ("model", "merge_mode"), "reset_after": ("model", "reset_after"), "use_bias": ("model", "use_bias"),
    "go_backwards": ("model", "go_backwards"), "masking": ("model", "masking"), "activation": ("model", "activation"),
    "recurrent_activation": ("model", "recurrent_activation"), "dropout": ("model", "dropout"),
    "recurrent_dropout": ("model", "recurrent_dropout"), "head": ("model", "head"),
    "recurrent_norm_max": ("model", "recurrent_norm_max"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "learning_rate": ("train", "learning_rate"),
    "patience": ("train", "patience"), "min_steps": ("train", "min_steps"),
    "class_weight": ("train", "class_weight"), "conditioning_retries": ("train", "conditioning_retries"), "threshold": ("train", "threshold"), "backend": ("export", "backend"), "opset": ("export", "opset"),
    "atol": ("verify", "atol"),
}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Nested dict of the settings given on the command line."""
    out: dict[str, Any] = {}
    for flag, path in _FLAG_TO_KEY.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        from pipeline.settings import load_config

        cfg = load_config(args.config, overrides_from_args(args))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from pipeline.training.run import run_build

        run_build(cfg)
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
