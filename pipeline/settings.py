"""Typed build configuration: every build setting of ``gru-build``, declared once.

Owns: the ``BuildConfig`` dataclass tree. Each setting is one ``setting(...)`` field that states its
default, help text, allowed values (choices, bounds or a rule with its wording) and, when it has one,
its ``gru-build`` flag. Derived from those declarations: ``BuildConfig.validate()``, the TOML checks of
``load_config``, the ``gru-build`` flags (pipeline/training/cli.py) and, outside the package, the
Markdown table of keys in docs/own-data.md (``SETTINGS``, rendered by tools/settings_table.py).
Imports: standard library and pipeline.errors only (so ``gru-build --help`` stays fast).
Reads: an optional TOML file. Writes: nothing (the resolved config is saved in the manifest).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "ExportConfig",
    "VerifyConfig",
    "BuildConfig",
    "Setting",
    "SETTINGS",
    "load_config",
]


def setting(default: Any, help: str, *, choices: Optional[tuple[str, ...]] = None,
            ge: Optional[float] = None, gt: Optional[float] = None,
            le: Optional[float] = None, lt: Optional[float] = None,
            rule: Optional[tuple[Callable[[Any], bool], str]] = None,
            unset: Optional[str] = None, flag: Optional[str] = None, metavar: Optional[str] = None) -> Any:
    """A dataclass field declaring one build setting.

    help: what the setting does. choices: the allowed strings. ge/gt/le/lt: numeric bounds
    (>=, >, <=, <). rule: (predicate, wording) for anything else. unset: what a None default
    means. flag: the ``gru-build`` flag (None = config file only). metavar: the flag's value name.
    """
    kinds = [choices is not None, rule is not None, any(b is not None for b in (ge, gt, le, lt))]
    if sum(kinds) > 1:
        raise TypeError("declare choices, bounds or a rule, not several")
    spec = dict(help=help, choices=choices, ge=ge, gt=gt, le=le, lt=lt, rule=rule, unset=unset,
                flag=flag, metavar=metavar)
    return field(default=default, metadata={"setting": spec})


@dataclass
class DataConfig:
    """Where the sequences come from and how they are split."""

    path: Optional[str] = setting(
        None, "training data file (.npz, .csv long layout, .ts; not .npy: it has no labels)",
        unset="the embedded default task", flag="--data", metavar="FILE")
    test_path: Optional[str] = setting(
        None, "held-out test data file", unset="a stratified split of the training data",
        flag="--test-data", metavar="FILE")
    n_samples: int = setting(6000, "default task: number of sequences (train + validation + test)",
                             flag="--samples")
    timesteps: int = setting(50, "default task: timesteps per sequence", ge=2, flag="--timesteps")
    features: int = setting(8, "default task: features per timestep", ge=2, flag="--features")
    test_fraction: float = setting(0.2, "held-out test share when no test file is given", gt=0, lt=1)
    val_fraction: float = setting(
        0.0, "share of the training data held out to choose the threshold and report validation metrics; "
             "0 = train on all of it, threshold 0.5", ge=0, lt=1, flag="--val-fraction")


# Batch when train.batch_size is unset: n_train / AUTO_BATCH[0] rows, clamped to [AUTO_BATCH[1], AUTO_BATCH[2]].
# Small sets train in batches of 16 (measured best on the public sets), the 4,800-row default task in 64.
AUTO_BATCH = (64, 16, 64)
# Updates when train.updates is unset: AUTO_UPDATES[0] / T, clamped to [AUTO_UPDATES[1], AUTO_UPDATES[2]].
# An update costs about T recurrent steps, so short series get more updates in the same time; on the
# public sets more updates helped every set measured (README "Accuracy on public data").
AUTO_UPDATES = (300_000, 1000, 2000)
# The member ensemble (model.members unset): measured on the public sets, README "Accuracy on public data".
DEFAULT_MEMBERS = 2


@dataclass
class ModelConfig:
    """Keras architecture: [Masking] -> GRU stack -> [pooling] -> Dense(1, sigmoid) (2 classes) or Dense(k, softmax)."""

    units: int = setting(64, "GRU units per layer (per direction)", ge=1, flag="--units")
    layers: int = setting(1, "stacked GRU layers", ge=1, flag="--layers")
    bidirectional: bool = setting(False, "wrap each GRU layer in Bidirectional", flag="--bidirectional")
    merge_mode: str = setting("concat", "how Bidirectional combines the two directions",
                              choices=("concat", "sum", "ave", "mul"), flag="--merge-mode")
    reset_after: bool = setting(
        True, "apply the reset gate after the recurrent matmul (Keras/CuDNN convention, ONNX linear_before_reset=1)",
        flag="--reset-after")
    use_bias: bool = setting(True, "give the GRU layers bias vectors", flag="--use-bias")
    activation: str = setting("tanh", "candidate-state activation of the GRU",
                              choices=("tanh", "relu", "sigmoid", "hard_sigmoid"), flag="--activation")
    recurrent_activation: str = setting("sigmoid", "gate activation of the GRU",
                                        choices=("sigmoid", "hard_sigmoid", "tanh", "relu"),
                                        flag="--recurrent-activation")
    go_backwards: bool = setting(False, "process each sequence in reverse order", flag="--go-backwards")
    dropout: float = setting(0.0, "input dropout rate (training only)", ge=0, lt=1, flag="--dropout")
    recurrent_dropout: float = setting(0.0, "recurrent dropout rate (training only)", ge=0, lt=1,
                                       flag="--recurrent-dropout")
    masking: Optional[bool] = setting(None, "skip the steps past each series' length (a Masking layer fed from the "
                                            "lengths; real all-zero steps stay data)",
                                      unset="on when the sequence lengths vary", flag="--masking")
    # avg gives every step a short gradient path, so long series (T=150+) do not end at chance on small
    # data; it streams like `last`.
    head: str = setting(
        "avg", "what the classifier reads: avg = mean of the GRU outputs over the real steps, last = the final "
               "state, max = the maximum over time",
        choices=("last", "avg", "max"), flag="--head")
    members: Optional[int] = setting(
        None, "independent GRUs trained side by side inside the one GRU(units): block-diagonal recurrence, one "
              "head each, logits averaged; the exported graph is the same GRU(units) (needs layers = 1, no "
              "Bidirectional, units divisible by members; 1 = a single GRU)",
        unset=f"{DEFAULT_MEMBERS} when the architecture allows it, else 1", ge=1, flag="--members")
    # Uncapped small-data training drifts to norms 7-12 whose float32 evaluation is chaotic (Keras and
    # ONNX then differ by 1e-5..1e-3).
    recurrent_norm_max: float = setting(
        2.0, "cap on each recurrent kernel's spectral norm, applied after every training update; 0 = off",
        rule=(lambda v: v == 0 or v >= 0.1, "0 (off) or >= 0.1"), flag="--recurrent-norm-max", metavar="S")


    def allows_members(self, k: int) -> bool:
        """Whether k members fit this architecture: one GRU layer, not Bidirectional, units divisible by k."""
        return self.layers == 1 and not self.bidirectional and self.units % k == 0

    def resolved_members(self) -> int:
        """``members``, or when unset DEFAULT_MEMBERS if the architecture allows it, else 1."""
        if self.members is not None:
            return int(self.members)
        return DEFAULT_MEMBERS if self.allows_members(DEFAULT_MEMBERS) else 1


@dataclass
class TrainConfig:
    """Optimizer, schedule and decision threshold.

    The defaults are meant to work unchanged from a few dozen to tens of thousands of sequences:
    the budget is counted in optimizer updates (so a 40-sample file still gets hundreds of steps),
    the learning rate decays to zero over them, every training series is used (no validation split
    unless data.val_fraction asks for one), and classes are weighted so an imbalanced file does not
    collapse onto the majority class. Measured on eight public sets: README "Accuracy on public data".
    """

    updates: Optional[int] = setting(
        None, "optimizer updates in all; the learning rate decays from learning_rate to 0 over them (cosine) "
              "and the final weights are kept",
        unset=f"auto: {AUTO_UPDATES[0]:,} / T (the padded series length), at least {AUTO_UPDATES[1]}, at most "
              f"{AUTO_UPDATES[2]}", ge=1, flag="--updates")
    epochs: Optional[int] = setting(
        None, "passes over the training data instead of a number of updates",
        unset="train.updates decides", ge=1, flag="--epochs")
    batch_size: Optional[int] = setting(
        None, "rows per update; the whole training set when it is smaller",
        unset=f"auto: n_train / {AUTO_BATCH[0]} rows (about {AUTO_BATCH[0]} updates per pass), at least {AUTO_BATCH[1]}, "
              f"at most {AUTO_BATCH[2]}", ge=1, flag="--batch-size")
    learning_rate: float = setting(1e-2, "peak Adam learning rate (cosine decay to 0 over the updates)",
                                   gt=0, flag="--learning-rate")
    clipnorm: float = setting(1.0, "clip the global gradient norm to this (keeps long sequences stable); 0 = off",
                              ge=0)
    class_weight: str = setting(
        "balanced", "balanced = weight each of the k classes n / (k * n_class) so an imbalanced file does not "
                    "collapse onto the majority class; none = unweighted",
        choices=("balanced", "none"), flag="--class-weight")
    conditioning_retries: int = setting(
        1, "when verification refuses the model, train again up to this many times, each with "
           "model.recurrent_norm_max halved (0 = never; no retry when the cap is off)",
        ge=0, le=3, flag="--conditioning-retries", metavar="N")
    threshold: Optional[float] = setting(
        None, "decision threshold on p(class 1) (two classes only: k >= 3 classes decide by argmax)",
        unset="0.5; with a validation split, chosen on it for the best balanced accuracy",
        gt=0, lt=1, flag="--threshold")
    # The Python API also takes the ints 0, 1, 2, hence a rule on str(value) rather than choices.
    verbose: str = setting("auto", "training progress: 0 = none; auto, 1 or 2 = one line per round of updates "
                                    "(loss, accuracy, elapsed time)",
                           rule=(lambda v: str(v) in ("auto", "0", "1", "2"), "auto|0|1|2"))


@dataclass
class ExportConfig:
    """ONNX conversion."""

    opset: int = setting(17, "ONNX opset of model.onnx", ge=13, le=17, flag="--opset")
    backend: str = setting("auto", "converter: auto = the native GRU op, else tf2onnx (Loop graph)",
                           choices=("auto", "native", "tf2onnx"), flag="--backend")


@dataclass
class VerifyConfig:
    """Keras vs onnxruntime equivalence check (a failure is an error)."""

    atol: float = setting(1e-5, "largest |p_keras - p_onnx| allowed on probabilities", gt=0, le=1e-3,
                          flag="--atol")
    n_random: int = setting(512, "samples per random stress family")
    large_batch: int = setting(2048, "size of the large-batch family")
    odd_batch: int = setting(37, "size of the odd-batch family")


@dataclass
class BuildConfig:
    """Everything ``gru-build`` needs; saved resolved in manifest.json."""

    seed: int = setting(0, "seeds the default task, the data splits, weight initialisation and shuffling",
                        flag="--seed")
    out: str = setting("exported", "artifact folder to publish", flag="--out", metavar="DIR")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "BuildConfig":
        """Raise ConfigError on values no build can use (each setting's own check comes from its declaration;
        the member ensemble's needs, which involve other settings, are checked here)."""
        for s in SETTINGS:
            problem = s.problem(functools.reduce(getattr, s.key.split("."), self))
            if problem:
                raise ConfigError(f"{s.key} {problem}")
        m = self.model
        if m.members is not None and m.members > 1 and not m.allows_members(m.members):
            raise ConfigError(
                f"model.members = {m.members} needs model.layers = 1, no Bidirectional and model.units divisible by "
                f"it, got layers {m.layers}, bidirectional {str(m.bidirectional).lower()}, units {m.units} "
                f"(set --members 1 for a single GRU)")
        return self


# ----------------------------------------------------------------------------- the declarations, walked

@dataclass(frozen=True)
class Setting:
    """One declared setting as found in the ``BuildConfig`` tree (see ``setting`` for the fields)."""

    key: str                 # dotted TOML key, e.g. "model.units"
    type: type               # int, float, bool or str (Optional removed)
    default: Any
    help: str
    choices: Optional[tuple[str, ...]] = None
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    rule: Optional[tuple[Callable[[Any], bool], str]] = None
    unset: Optional[str] = None
    flag: Optional[str] = None
    metavar: Optional[str] = None

    @property
    def section(self) -> str:
        """The TOML table holding the key ("" for top-level keys)."""
        return self.key.rpartition(".")[0]

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``concat|sum|ave|mul``, ``in (0, 1]``, ``>= 1``; "" = any."""
        if self.choices is not None:
            return "|".join(self.choices)
        if self.rule is not None:
            return self.rule[1]
        if self.ge is not None or self.gt is not None:
            low = (self.ge, "[", ">=") if self.ge is not None else (self.gt, "(", ">")
        else:
            low = None
        if self.le is not None or self.lt is not None:
            high = (self.le, "]", "<=") if self.le is not None else (self.lt, ")", "<")
        else:
            high = None
        if low and high:
            return f"in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
        if low or high:
            value, _, op = low or high
            return f"{op} {value:g}"
        return ""

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is not allowed ("must be ..., got ..."), or None when it is."""
        if value is None:
            return None if self.default is None else "must be set, got None"
        if self.choices is not None:
            ok = value in self.choices
        elif self.rule is not None:
            ok = self.rule[0](value)
        else:
            bounds = ((self.ge, operator.ge), (self.gt, operator.gt), (self.le, operator.le), (self.lt, operator.lt))
            ok = all(bound is None or holds(value, bound) for bound, holds in bounds)
        got = repr(value) if isinstance(value, str) else value
        return None if ok else f"must be {self.allowed()}, got {got}"


def _walk(cls: type, prefix: str) -> list[Setting]:
    """Every setting of the dataclass ``cls``, recursing into its sections, in declaration order."""
    hints = typing.get_type_hints(cls)
    found: list[Setting] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            found += _walk(hint, f"{prefix}{f.name}.")
            continue
        if "setting" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        found.append(Setting(key=prefix + f.name, type=kinds[0], default=f.default, **f.metadata["setting"]))
    return found


SETTINGS: tuple[Setting, ...] = tuple(_walk(BuildConfig, ""))
_BY_KEY = {s.key: s for s in SETTINGS}


# ----------------------------------------------------------------------------- loading

def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    """Set dataclass fields of ``obj`` from ``values``, recursing into sections; types are checked."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key {where + key!r}: expected one of {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config section {where + key!r} must be a table, got {type(value).__name__}")
            _merge(current, value, f"{where}{key}.")
            continue
        want = _BY_KEY[where + key].type
        if value is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ConfigError(f"config key {where + key!r} expects {want.__name__}, got {type(value).__name__} {value!r}")
        setattr(obj, key, value)


def load_config(path: Optional[str] = None, overrides: Optional[dict[str, Any]] = None) -> BuildConfig:
    """Defaults, then the TOML file at ``path``, then ``overrides`` (nested dict); validated."""
    cfg = BuildConfig()
    if path is not None:
        p = Path(path)
        try:
            values = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path!r}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path!r} as TOML: {exc}") from None
        _merge(cfg, values, "")
    if overrides:
        _merge(cfg, overrides, "")
    return cfg.validate()
