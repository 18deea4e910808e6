"""``gru-build``: train on the default task or a user's data, export, verify, publish.

Owns: argument parsing and mapping flags onto ``BuildConfig``; the flags, their types, choices, help
and defaults are generated from the declarations in pipeline.settings (nothing is typed twice).
Imports: argparse and pipeline.settings (standard library only) at start-up; the heavy stages are
imported only when a build runs (fast ``--help``). Reads: the --config file. Writes: via run_build.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from pipeline import progress
from pipeline.cli_common import run_cli
from pipeline.settings import SETTINGS, Setting, load_config

PROG = "gru-build"


def _flag_options(s: Setting) -> dict[str, Any]:
    """argparse options of one declared setting; its default is shown in the help, never typed twice."""
    if s.default is None:
        default = s.unset
    elif s.type is bool:
        default = "on" if s.default else "off"
    else:
        default = s.default
    options: dict[str, Any] = {"dest": _dest(s), "help": f"{s.help} (default: {default})".replace("%", "%%")}
    if s.type is bool:  # --x / --no-x; None = not given, so the config file or default stays
        options.update(action=argparse.BooleanOptionalAction, default=None)
    elif s.choices is not None:
        options["choices"] = list(s.choices)
    elif s.type is not str:
        options["type"] = s.type
    if s.metavar:
        options["metavar"] = s.metavar
    return options


def _dest(s: Setting) -> str:
    return s.flag.lstrip("-").replace("-", "_")


def parser() -> argparse.ArgumentParser:
    """The gru-build parser: --config plus one flag per setting that declares one (pipeline.settings)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a Keras GRU classifier (2 or more classes), export it to ONNX, verify Keras == onnxruntime, "
                    "and write the artifact folder. With no arguments: the embedded default task -> exported/.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="TOML file with any setting (every key: README, 'Config file'); flags override it")
    groups: dict[str, Any] = {"": p}
    for s in SETTINGS:
        if s.flag is None:
            continue
        if s.section not in groups:
            groups[s.section] = p.add_argument_group(f"[{s.section}] settings")
        groups[s.section].add_argument(s.flag, **_flag_options(s))
    return p


# argparse dest -> key path in BuildConfig, e.g. "test_data" -> ("data", "test_path")
_FLAG_TO_KEY = {_dest(s): tuple(s.key.split(".")) for s in SETTINGS if s.flag is not None}


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
        progress.show_progress()
        cfg = load_config(args.config, overrides_from_args(args))
        from pipeline.training.run import run_build  # TF-free until its train stage (data refusals are fast)

        run_build(cfg)
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
