"""Sequences in memory: the ``SequenceData`` every reader returns, right-padding, and label parsing.

Owns: ``SequenceData``, ``pad_sequences`` and its memory guard (``PAD_MAX_CELLS``, ``PAD_BLOWUP``),
``labels_from_text`` / ``check_labels`` (raw labels as read from a file), the long layouts' timestep
rule and its wording (``missing_timesteps``: ``t`` is 0, 1, ..., T_i - 1, each once). Shared by
``pipeline.datafiles`` (NPZ, NPY, CSV, .ts) and ``pipeline.parquet_io`` (Parquet), which both import
it and not each other's internals: datafiles imports parquet_io (lazily, for .parquet files) and
parquet_io imports only this module and pipeline.errors.
Imports: numpy, pipeline.errors. Reads/writes: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipeline.errors import DataFormatError, InputError

__all__ = ["SequenceData", "pad_sequences", "check_padding_size", "labels_from_text", "check_labels",
           "missing_timesteps", "t_text", "TIMESTEP_CONTRACT", "PAD_MAX_CELLS", "PAD_BLOWUP"]

# Padding variable-length series to the longest one may cost far more memory than the file holds
# (one long series among many short ones). Refuse when the padded array would exceed this many
# cells AND be more than PAD_BLOWUP times the real values: such a file is hostile or needs splitting.
PAD_MAX_CELLS = 1 << 28  # 1 GiB of float32
PAD_BLOWUP = 16


@dataclass
class SequenceData:
    """Sequences read from a file, right-padded to a common length.

    Attributes:
        X: (N, T, F) float32, zeros after each row's length.
        lengths: (N,) int64, real number of timesteps of each row (1 <= lengths <= T).
        y: (N,) raw labels as read (numbers or strings), or None when the file has none.
        ids: (N,) str sample ids (from the file, else "0", "1", ...).
        feature_names: names of the F features when the file gives them.
        lengths_given: the file states the lengths (NPZ ``lengths``, or rows of their own length: CSV,
            .ts, Parquet); False for an array without them (.npy, NPZ without ``lengths``), whose
            lengths a model with its own Masking value reads off trailing mask-valued steps.
    """

    X: np.ndarray
    lengths: np.ndarray
    y: Optional[np.ndarray] = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    feature_names: Optional[list[str]] = None
    lengths_given: bool = True

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[2])

    @property
    def variable_length(self) -> bool:
        return bool(self.n_samples and (self.lengths != self.X.shape[1]).any())


def check_padding_size(n: int, longest: int, n_features: int, real_steps: int, itemsize: int = 4) -> None:
    """InputError when padding ``n`` sequences to ``longest`` steps would need far more memory than
    their ``real_steps`` timesteps hold (see PAD_MAX_CELLS, PAD_BLOWUP)."""
    padded = n * longest * n_features
    if padded > PAD_MAX_CELLS and padded > PAD_BLOWUP * real_steps * n_features:
        raise InputError(
            f"padding {n} sequences to the longest ({longest} timesteps) would need "
            f"{padded * itemsize / 2**30:.1f} GiB for {real_steps} real timesteps: "
            "expected sequences of comparable length; split the file or trim the longest series"
        )


def pad_sequences(series: list[np.ndarray], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of (T_i, F) arrays with zeros.

    Returns:
        X: (N, max T_i, F) array of ``dtype``; lengths: (N,) int64.
    """
    if not series:
        raise InputError("expected at least one sequence, got an empty list")
    n_features = {int(s.shape[1]) for s in series}
    if len(n_features) != 1:
        raise InputError(f"all sequences must have the same number of features, got {sorted(n_features)}")
    lengths = np.array([s.shape[0] for s in series], dtype=np.int64)
    n_feat = next(iter(n_features))
    check_padding_size(len(series), int(lengths.max()), n_feat, int(lengths.sum()), np.dtype(dtype).itemsize)
    X = np.zeros((len(series), int(lengths.max()), n_feat), dtype=dtype)
    for i, s in enumerate(series):
        X[i, : s.shape[0]] = s
    return X, lengths


def check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels read from an array: (n,) integers (whole floats become int64) or strings, or, for a
    multi-label model, (n, k) of 0 and 1 (one column per class)."""
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] >= 2:
        if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
            raise DataFormatError(f"{where}: expected (n, k) multi-label labels of 0 and 1, got other values")
        return y.astype(np.int64)
    if y.shape != (n,):
        raise DataFormatError(f"{where}: expected labels of shape ({n},) (or ({n}, k) 0/1 for multi-label), got "
                              f"{y.shape}")
    if y.dtype.kind not in "biuUS":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            return y.astype(np.int64)
        raise DataFormatError(f"{where}: expected integer or string labels, got dtype {y.dtype}")
    if y.dtype.kind == "S":
        y = y.astype(str)
    return y


def labels_from_text(values: list[str], where: str) -> np.ndarray:
    """Labels read as text: integers when all are integers, else strings."""
    if any(v == "" for v in values):
        raise DataFormatError(f"{where}: empty label")
    try:
        as_float = [float(v) for v in values]
    except ValueError:
        return np.array(values, dtype=str)
    if all(np.isfinite(f) and f == int(f) and abs(f) < 2**63 for f in as_float):
        return np.array([int(f) for f in as_float], dtype=np.int64)
    return np.array(values, dtype=str)


# The long layouts (CSV, Parquet): ``t`` is the timestep index 0, 1, ..., T_i - 1 of each sequence.
TIMESTEP_CONTRACT = "expected one row for every t = 0, 1, 2, ... up to the sequence's last timestep"


def t_text(t: float) -> str:
    """A ``t`` value as written in messages: ``4``, ``0.5``, ``nan``."""
    return str(int(t)) if float(t).is_integer() else f"{float(t):g}"


def missing_timesteps(expected: int, t: int) -> str:
    """Why a sequence whose sorted rows reach ``t`` where ``expected`` was due is refused (``t > expected``):
    ``no row for t=4 (its rows go from t=3 to t=5): expected one row for every t = 0, 1, 2, ...``."""
    missing = f"t={expected}" if t - 1 == expected else f"t={expected}..{t - 1}"
    after = f"its rows go from t={expected - 1} to t={t}" if expected else f"its first row is t={t}"
    return f"no row for {missing} ({after}): {TIMESTEP_CONTRACT}"
