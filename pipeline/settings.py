"""Typed build configuration: data, model, training, export and verification settings.

Owns: the ``BuildConfig`` dataclass tree, its defaults, TOML loading and CLI overrides.
Imports: standard library only (so ``gru-build --help`` stays fast).
Reads: an optional TOML file. Writes: nothing (the resolved config is saved in the manifest).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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
    "load_config",
]


@dataclass
class DataConfig:
    """Where the sequences come from and how they are split."""

    path: Optional[str] = None       # training data file; None = embedded default task
    test_path: Optional[str] = None  # held-out test file; None = stratified split of `path`
    n_samples: int = 6000            # default task: total samples (train + val + test)
    timesteps: int = 50              # default task: sequence length
    features: int = 8                # default task: features per timestep
    test_fraction: float = 0.2       # held-out share when no test file is given
    val_fraction: float = 0.2        # share of the remaining training data for early stopping


@dataclass
class ModelConfig:
    """Keras architecture: [Masking] -> GRU stack -> [pooling] -> Dense(1, sigmoid)."""

    units: int = 64                       # GRU units per layer (per direction)
    layers: int = 1                       # stacked GRU layers
    bidirectional: bool = False           # wrap each GRU in Bidirectional
    merge_mode: str = "concat"            # Bidirectional merge: concat | sum | ave | mul
    reset_after: bool = True              # Keras/CuDNN convention (ONNX linear_before_reset=1)
    use_bias: bool = True
    activation: str = "tanh"              # candidate activation: tanh | relu | sigmoid | hard_sigmoid
    recurrent_activation: str = "sigmoid" # gate activation: sigmoid | hard_sigmoid | tanh | relu
    go_backwards: bool = False            # process sequences in reverse
    dropout: float = 0.0                  # input dropout (training only)
    recurrent_dropout: float = 0.0        # recurrent dropout (training only)
    masking: Optional[bool] = None        # Masking layer; None = on when data has variable lengths
    head: str = "avg"                     # avg (mean of the GRU outputs over real steps) | last (final state) | max
                                          # avg: every step gets a short gradient path, so long series (T=150+)
                                          # do not end at chance on small data; it streams like `last`
    recurrent_norm_max: float = 2.0       # cap on each recurrent kernel's spectral norm after every update; 0 = off.
                                          # Uncapped small-data training drifts to norms 7-12 whose float32
                                          # evaluation is chaotic (Keras and ONNX then differ by 1e-5..1e-3)


@dataclass
class TrainConfig:
    """Optimizer, schedule and decision threshold.

    The defaults are meant to work unchanged from a few dozen to tens of thousands of sequences:
    the budget is counted in optimizer updates (so a 40-sample file still gets hundreds of steps),
    patience likewise, the learning rate halves on plateaus, the best-validation weights are kept,
    and classes are weighted so an imbalanced file does not collapse onto the majority class.
    """

    epochs: Optional[int] = None     # None = auto: max(min_epochs, ceil(min_steps / steps per epoch)), capped at max_epochs; a number = exactly that upper bound
    min_epochs: int = 40             # auto epochs: at least this many (early stopping usually ends sooner)
    min_steps: int = 3000            # auto epochs: at least this many optimizer updates ...
    max_epochs: int = 1000           # ... but never more epochs than this (wins over min_epochs)
    batch_size: int = 64             # shrunk automatically so small training sets get >= 4 updates per epoch
    learning_rate: float = 3e-3      # Adam, initial (halved on plateaus, see lr_factor)
    patience: int = 6                # early stopping on val_loss after this many epochs without improvement ...
    patience_steps: int = 600        # ... and at least this many optimizer updates; best weights restored
    lr_factor: float = 0.5           # ReduceLROnPlateau on val_loss: multiply the learning rate by this (1.0 = off)
    lr_patience: Optional[int] = None  # epochs without improvement before reducing; None = half the early-stopping patience
    min_lr: float = 1e-5             # ReduceLROnPlateau floor
    clipnorm: float = 1.0            # clip the global gradient norm (keeps long sequences stable); 0 = off
    class_weight: str = "balanced"   # balanced (weights n / (2 * n_class)) | none
    conditioning_retries: int = 1    # when verification refuses the model, train again this many times, each with
                                     # model.recurrent_norm_max halved (0 = never; no retry when the cap is off)
    threshold: Optional[float] = None  # decision threshold on p(class 1); None = chosen on validation (max balanced accuracy, 0.5 if degenerate)
    verbose: str = "auto"            # Keras progress: auto | 0 | 1 | 2


@dataclass
class ExportConfig:
    """ONNX conversion."""

    opset: int = 17                  # fixed ONNX opset of model.onnx
    backend: str = "auto"            # auto (native GRU op, else tf2onnx) | native | tf2onnx


@dataclass
class VerifyConfig:
    """Keras vs onnxruntime equivalence check (a failure is an error)."""

    atol: float = 1e-5               # max |p_keras - p_onnx| allowed on probabilities
    n_random: int = 512              # samples per random stress family
    large_batch: int = 2048          # size of the large-batch family
    odd_batch: int = 37              # size of the odd-batch family


@dataclass
class BuildConfig:
    """Everything ``gru-build`` needs; saved resolved in manifest.json."""

    seed: int = 0
    out: str = "exported"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "BuildConfig":
        """Raise ConfigError on values no build can use."""
        m, t, e = self.model, self.train, self.export
        checks = [
            (m.units >= 1, f"model.units must be >= 1, got {m.units}"),
            (m.layers >= 1, f"model.layers must be >= 1, got {m.layers}"),
            (m.merge_mode in ("concat", "sum", "ave", "mul"), f"model.merge_mode must be concat|sum|ave|mul, got {m.merge_mode!r}"),
            (m.head in ("last", "avg", "max"), f"model.head must be last|avg|max, got {m.head!r}"),
            (m.recurrent_norm_max == 0 or m.recurrent_norm_max >= 0.1,
             f"model.recurrent_norm_max must be 0 (off) or >= 0.1, got {m.recurrent_norm_max}"),
            (0.0 <= m.dropout < 1.0 and 0.0 <= m.recurrent_dropout < 1.0, "dropout rates must be in [0, 1)"),
            (t.epochs is None or t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
            (t.min_epochs >= 1 and t.max_epochs >= 1, f"train.min_epochs and train.max_epochs must be >= 1, got {t.min_epochs}, {t.max_epochs}"),
            (t.min_steps >= 0 and t.patience >= 1 and t.patience_steps >= 0,
             "train.min_steps and train.patience_steps must be >= 0, train.patience >= 1"),
            (0 < t.lr_factor <= 1, f"train.lr_factor must be in (0, 1], got {t.lr_factor}"),
            (t.lr_patience is None or t.lr_patience >= 1, f"train.lr_patience must be >= 1, got {t.lr_patience}"),
            (t.clipnorm >= 0, f"train.clipnorm must be >= 0 (0 = off), got {t.clipnorm}"),
            (0 <= t.conditioning_retries <= 3, f"train.conditioning_retries must be in [0, 3], got {t.conditioning_retries}"),
            (t.min_lr >= 0, f"train.min_lr must be >= 0, got {t.min_lr}"),
            (t.class_weight in ("balanced", "none"), f"train.class_weight must be balanced|none, got {t.class_weight!r}"),
            (t.threshold is None or 0 < t.threshold < 1, f"train.threshold must be in (0, 1), got {t.threshold}"),
            (str(t.verbose) in ("auto", "0", "1", "2"), f"train.verbose must be auto|0|1|2, got {t.verbose!r}"),
            (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
            (t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}"),
            (e.backend in ("auto", "native", "tf2onnx"), f"export.backend must be auto|native|tf2onnx, got {e.backend!r}"),
            (13 <= e.opset <= 17, f"export.opset must be in [13, 17], got {e.opset}"),
            (0 < self.verify.atol <= 1e-3, f"verify.atol must be in (0, 1e-3], got {self.verify.atol}"),
            (0 < self.data.test_fraction < 1 and 0 < self.data.val_fraction < 1, "split fractions must be in (0, 1)"),
            (self.data.timesteps >= 2 and self.data.features >= 2, "default task needs timesteps >= 2 and features >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def _expected_type(obj: Any, name: str) -> Optional[type]:
    """The non-None type a dataclass field declares (``Optional[int]`` -> int), or None if unknown."""
    hint = typing.get_type_hints(type(obj)).get(name)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is not None else [hint]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    """Set dataclass fields of ``obj`` from ``values``, recursing into sections."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key {where}{key!r}: expected one of {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config section {where}{key!r} must be a table, got {type(value).__name__}")
            _merge(current, value, f"{where}{key}.")
        else:
            want = _expected_type(obj, key) or (type(current) if current is not None else None)
            if want is not None and value is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
                if want is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                else:
                    raise ConfigError(
                        f"config key {where}{key!r} expects {want.__name__}, got {type(value).__name__} {value!r}"
                    )
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
