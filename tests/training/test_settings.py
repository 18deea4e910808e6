"""Every build setting is declared once (pipeline/settings.py) and the CLI, TOML checks and docs follow it.

Imports: pipeline.settings, pipeline.training.cli (no TensorFlow), tools/settings_table.py and tools/regions.py
(tools/ is on sys.path: tests/conftest.py). Reads: docs/own-data.md. Writes: tmp_path only.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import regions
import settings_table
from pipeline.errors import ConfigError
from pipeline.settings import SETTINGS, BuildConfig, load_config
from pipeline.training import cli

ROOT = Path(__file__).resolve().parents[2]

# The gru-build flags as they were before the flags were generated: name -> (config key, type, choices).
# A declaration that renames, drops or retypes a flag fails here.
FLAGS = {
    "--seed": ("seed", int, None), "--out": ("out", None, None),
    "--data": ("data.path", None, None), "--test-data": ("data.test_path", None, None),
    "--samples": ("data.n_samples", int, None), "--timesteps": ("data.timesteps", int, None),
    "--features": ("data.features", int, None),
    "--units": ("model.units", int, None), "--layers": ("model.layers", int, None),
    "--bidirectional": ("model.bidirectional", bool, None),
    "--merge-mode": ("model.merge_mode", None, ["concat", "sum", "ave", "mul"]),
    "--reset-after": ("model.reset_after", bool, None), "--use-bias": ("model.use_bias", bool, None),
    "--go-backwards": ("model.go_backwards", bool, None), "--masking": ("model.masking", bool, None),
    "--activation": ("model.activation", None, ["tanh", "relu", "sigmoid", "hard_sigmoid"]),
    "--recurrent-activation": ("model.recurrent_activation", None, ["sigmoid", "hard_sigmoid", "tanh", "relu"]),
    "--dropout": ("model.dropout", float, None), "--recurrent-dropout": ("model.recurrent_dropout", float, None),
    "--head": ("model.head", None, ["last", "avg", "max"]),
    "--recurrent-norm-max": ("model.recurrent_norm_max", float, None), "--members": ("model.members", int, None),
    "--epochs": ("train.epochs", int, None), "--batch-size": ("train.batch_size", int, None),
    "--learning-rate": ("train.learning_rate", float, None), "--updates": ("train.updates", int, None),
    "--val-fraction": ("data.val_fraction", float, None),
    "--class-weight": ("train.class_weight", None, ["balanced", "none"]),
    "--conditioning-retries": ("train.conditioning_retries", int, None),
    "--threshold": ("train.threshold", float, None),
    "--backend": ("export.backend", None, ["auto", "native", "tf2onnx"]), "--opset": ("export.opset", int, None),
    "--atol": ("verify.atol", float, None),
}


def _leaf_fields(cls=BuildConfig, prefix=""):
    """(dotted key, dataclasses.Field) of every non-section field, walked without pipeline.settings' helpers."""
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # a section
            yield from _leaf_fields(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


def _flag_actions():
    return {a.option_strings[0]: a for a in cli.parser()._actions if a.option_strings and a.dest != "help"}


def test_every_field_is_declared_with_help():
    fields = dict(_leaf_fields())
    assert [s.key for s in SETTINGS] == list(fields)
    for key, f in fields.items():
        declared = f.metadata.get("setting")
        assert declared and len(declared["help"]) > 10, key
        assert (f.default is None) == bool(declared["unset"]), f"{key}: a None default must say what unset means"
    # the resolved config (saved in the manifest) has exactly the declared keys
    resolved = BuildConfig().to_dict()
    flat = {f"{name}.{key}" for name, section in resolved.items() if isinstance(section, dict) for key in section}
    flat |= {name for name, value in resolved.items() if not isinstance(value, dict)}
    assert flat == set(fields)


def test_parser_flags_match_declarations():
    actions = _flag_actions()
    assert set(actions) == set(FLAGS) | {"--config"}
    assert cli._FLAG_TO_KEY == {actions[f].dest: tuple(key.split(".")) for f, (key, _, _) in FLAGS.items()}
    by_key = {s.key: s for s in SETTINGS}
    for flag, (key, kind, choices) in FLAGS.items():
        action, declared = actions[flag], by_key[key]
        assert declared.flag == flag
        assert action.default is None, flag  # unset flags leave the config file / default alone
        if kind is bool:
            assert isinstance(action, argparse.BooleanOptionalAction) and declared.type is bool, flag
            assert f"--no-{flag[2:]}" in action.option_strings
        else:
            assert action.type is kind and action.choices == choices, flag
            assert declared.choices == (tuple(choices) if choices else None), flag
        assert action.help.startswith(declared.help), flag


def test_cli_defaults_equal_dataclass_defaults():
    assert load_config(None, cli.overrides_from_args(cli.parser().parse_args([]))) == BuildConfig()
    fields = dict(_leaf_fields())
    for flag, action in _flag_actions().items():
        if flag == "--config":
            continue
        default = fields[FLAGS[flag][0]].default
        if default is not None:
            shown = ("on" if default else "off") if isinstance(default, bool) else default
            assert action.help.endswith(f"(default: {shown})"), (flag, action.help)
        else:
            assert "(default: " in action.help and "None" not in action.help, flag


def test_flags_land_on_their_keys():
    args = cli.parser().parse_args(["--units", "6", "--test-data", "t.csv", "--no-use-bias", "--samples", "300",
                                    "--atol", "1e-4", "--class-weight", "none"])
    assert cli.overrides_from_args(args) == {
        "model": {"units": 6, "use_bias": False}, "data": {"test_path": "t.csv", "n_samples": 300},
        "verify": {"atol": 1e-4}, "train": {"class_weight": "none"}}


@pytest.mark.parametrize("toml, message", [
    ('[model]\nactivation = "swish"\n', "model.activation must be tanh|relu|sigmoid|hard_sigmoid, got 'swish'"),
    ('[model]\nrecurrent_activation = "gelu"\n',
     "model.recurrent_activation must be sigmoid|hard_sigmoid|tanh|relu, got 'gelu'"),
    ("[train]\nupdates = 0\n", "train.updates must be >= 1, got 0"),
    ("[data]\nval_fraction = 1\n", "data.val_fraction must be in [0, 1), got 1.0"),
    ("[train]\nverbose = \"3\"\n", "train.verbose must be auto|0|1|2, got '3'"),
    ("[model]\nunit = 3\n", "unknown config key 'model.unit'"),
    ('[model]\nunits = "3"\n', "config key 'model.units' expects int, got str '3'"),
])
def test_toml_values_outside_the_declaration_are_refused(tmp_path, capsys, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(message)
    assert cli.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gru-build: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# Every check BuildConfig.validate() made before the checks were generated, with the same meaning.
@pytest.mark.parametrize("overrides, message", [
    ({"model": {"units": 0}}, "model.units must be >= 1, got 0"),
    ({"model": {"layers": 0}}, "model.layers must be >= 1, got 0"),
    ({"model": {"merge_mode": "max"}}, "model.merge_mode must be concat|sum|ave|mul, got 'max'"),
    ({"model": {"head": "first"}}, "model.head must be last|avg|max, got 'first'"),
    ({"model": {"recurrent_norm_max": 0.05}}, "model.recurrent_norm_max must be 0 (off) or >= 0.1, got 0.05"),
    ({"model": {"dropout": 1.0}}, "model.dropout must be in [0, 1), got 1.0"),
    ({"model": {"recurrent_dropout": -0.1}}, "model.recurrent_dropout must be in [0, 1), got -0.1"),
    ({"train": {"epochs": 0}}, "train.epochs must be >= 1, got 0"),
    ({"train": {"clipnorm": -1}}, "train.clipnorm must be >= 0, got -1.0"),
    ({"train": {"conditioning_retries": 4}}, "train.conditioning_retries must be in [0, 3], got 4"),
    ({"train": {"class_weight": "auto"}}, "train.class_weight must be balanced|none, got 'auto'"),
    ({"train": {"threshold": 1.5}}, "train.threshold must be in (0, 1), got 1.5"),
    ({"train": {"threshold": 0}}, "train.threshold must be in (0, 1), got 0.0"),
    ({"train": {"verbose": "loud"}}, "train.verbose must be auto|0|1|2, got 'loud'"),
    ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate must be > 0, got 0.0"),
    ({"export": {"backend": "onnxmltools"}}, "export.backend must be auto|native|tf2onnx, got 'onnxmltools'"),
    ({"export": {"opset": 18}}, "export.opset must be in [13, 17], got 18"),
    ({"verify": {"atol": 0.01}}, "verify.atol must be in (0, 0.001], got 0.01"),
    ({"data": {"test_fraction": 0}}, "data.test_fraction must be in (0, 1), got 0.0"),
    ({"data": {"val_fraction": 1}}, "data.val_fraction must be in [0, 1), got 1.0"),
    ({"data": {"val_fraction": -0.1}}, "data.val_fraction must be in [0, 1), got -0.1"),
    ({"train": {"updates": 0}}, "train.updates must be >= 1, got 0"),
    ({"data": {"timesteps": 1}}, "data.timesteps must be >= 2, got 1"),
    ({"data": {"features": 1}}, "data.features must be >= 2, got 1"),
])
def test_every_check_is_kept(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("overrides", [
    {"model": {"recurrent_norm_max": 0.0}}, {"model": {"recurrent_norm_max": 0.1}},
    {"train": {"updates": 1, "conditioning_retries": 0, "clipnorm": 0}}, {"data": {"val_fraction": 0.0}},
    {"train": {"verbose": "2", "threshold": 0.5, "epochs": 1}}, {"export": {"opset": 13}},
    {"verify": {"atol": 1e-3}}, {"model": {"activation": "relu", "recurrent_activation": "hard_sigmoid"}},
])
def test_values_at_the_edges_are_accepted(overrides):
    load_config(None, overrides)


def test_python_api_keeps_integer_verbose():
    cfg = BuildConfig()
    cfg.train.verbose = 1
    assert cfg.validate() is cfg


def test_docs_table_is_current():
    doc = settings_table.DOC
    region = regions.read_region(doc.read_text(encoding="utf-8"), settings_table.REGION, str(doc))
    assert region == settings_table.settings_table(), "run: python tools/settings_table.py --update-docs"
    for s in SETTINGS:
        assert f"| `{s.key}` |" in region


def test_build_help_imports_nothing_heavy():
    code = ("import sys, contextlib, io\n"
            "from pipeline.training import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: cli.main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('numpy', 'tensorflow', 'keras', 'onnx') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
