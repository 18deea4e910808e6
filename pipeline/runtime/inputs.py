"""Validation of user inputs before they reach onnxruntime.

Owns: turning whatever a caller passes (array, list of arrays, lengths) into a checked float32
(N, T, F) batch plus lengths, or raising ``InputError`` with one line naming what was expected
and what was received. Imports: numpy and pipeline light modules only (TF-free).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from pipeline.datafiles import pad_sequences
from pipeline.errors import InputError

__all__ = ["ArrayLike", "prepare_features", "check_lengths", "check_finite"]

ArrayLike = Union[np.ndarray, Sequence[np.ndarray]]


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        kind = {"b": "bool", "O": "Python objects", "U": "strings", "S": "bytes", "c": "complex"}.get(arr.dtype.kind, str(arr.dtype))
        raise InputError(f"{what}: expected numeric features (float or int), got {kind} (dtype {arr.dtype})")
    return arr


def _check_float32_range(arr: np.ndarray, what: str) -> None:
    """Refuse finite values that would become Inf when cast to float32 (float64 or wider input)."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        finite = arr[np.isfinite(arr)]
        big = float(np.abs(finite).max(initial=0.0))
        if big > float(np.finfo(np.float32).max):
            raise InputError(f"{what}: values up to {big:.3g} overflow float32 (max {np.finfo(np.float32).max:.3g})")


def check_finite(X: np.ndarray, lengths: Optional[np.ndarray], what: str = "X") -> None:
    """Raise InputError naming the first NaN/Inf on a real timestep of X (N, T, F)."""
    if lengths is None:
        if np.isfinite(X).all():
            return
        bad = ~np.isfinite(X)
    else:
        bad = ~np.isfinite(X) & (np.arange(X.shape[1])[None, :, None] < lengths[:, None, None])
        if not bad.any():
            return
    i, t, f = (int(v) for v in np.argwhere(bad)[0])
    raise InputError(
        f"{what}: expected finite values, got {X[i, t, f]} at sample {i}, timestep {t}, feature {f} "
        f"({int(bad.sum())} non-finite values in all)"
    )


def check_lengths(lengths, n: int, t: int) -> np.ndarray:
    """Check lengths (N,) are integers in [1, T]; return int64."""
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise InputError(f"lengths: expected ({n},) integers, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and ((arr < 1).any() or (arr > t).any()):
        raise InputError(f"lengths: expected values in [1, {t}], got values in [{arr.min()}, {arr.max()}]")
    return arr


def prepare_features(X: ArrayLike, n_features: int, lengths=None, fixed_timesteps: Optional[int] = None,
                     check_values: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Check and convert model input.

    Args:
        X: (N, T, F) array of raw features, or a list of (T_i, F) arrays of varying length.
        n_features: F the model expects.
        lengths: optional (N,) real lengths of right-padded rows of an array X.
        fixed_timesteps: T when the model's time axis is fixed, else None.
        check_values: check an array X for NaN/Inf here; False when the caller checks the scaled
            values instead (a NaN/Inf survives scaling) and calls ``check_finite`` on X only to
            name a failure.
    Returns:
        X as C-contiguous float32 (N, T, F) and lengths (N,) int64, or None when all rows are full.
    Raises:
        InputError: wrong type, rank, feature count, empty input, NaN/Inf, bad lengths.
    """
    if isinstance(X, (list, tuple)):
        if lengths is not None:
            raise InputError("lengths: pass lengths only with a padded array, not with a list of sequences")
        if len(X) == 0:
            raise InputError("X: expected at least one sequence, got an empty list")
        series = []
        for i, s in enumerate(X):
            try:
                arr = np.asarray(s)
            except (ValueError, TypeError) as exc:
                raise InputError(f"X[{i}]: expected a (timesteps, {n_features}) numeric array, got {exc}") from None
            _numeric(arr, f"X[{i}]")
            if arr.ndim != 2:
                raise InputError(f"X[{i}]: expected shape (timesteps, {n_features}), got rank {arr.ndim} shape {arr.shape}")
            if arr.shape[1] != n_features:
                raise InputError(f"X[{i}]: expected {n_features} features, got {arr.shape[1]}")
            if arr.shape[0] == 0:
                raise InputError(f"X[{i}]: expected at least one timestep, got 0")
            _check_float32_range(arr, f"X[{i}]")
            series.append(arr)
        with np.errstate(over="ignore"):
            Xp, lens = pad_sequences(series)
        check_finite(Xp, lens)
        if fixed_timesteps is not None and Xp.shape[1] > fixed_timesteps:
            raise InputError(f"X: expected at most {fixed_timesteps} timesteps, got {Xp.shape[1]}")
        return Xp, (lens if (lens != Xp.shape[1]).any() else None)
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise InputError(f"X: expected a (samples, timesteps, {n_features}) numeric array, got {exc}") from None
    _numeric(arr, "X")
    if arr.ndim != 3:
        hint = "; for one sequence pass X[None]" if arr.ndim == 2 else ""
        raise InputError(f"X: expected shape (samples, timesteps, {n_features}), got rank {arr.ndim} shape {arr.shape}{hint}")
    n, t, f = arr.shape
    if f != n_features:
        raise InputError(f"X: expected {n_features} features in the last axis, got {f} (shape {arr.shape})")
    if n == 0 or t == 0:
        raise InputError(f"X: expected at least one sample and one timestep, got shape {arr.shape}")
    if fixed_timesteps is not None and t != fixed_timesteps:
        raise InputError(f"X: expected {fixed_timesteps} timesteps, got {t}")
    _check_float32_range(arr, "X")
    X32 = np.ascontiguousarray(arr, dtype=np.float32)
    lens = None if lengths is None else check_lengths(lengths, n, t)
    if check_values:
        check_finite(X32, lens)
    if lens is not None and (lens == t).all():
        lens = None
    return X32, lens


def prepare_tokens(X: ArrayLike, vocabulary_size: int, lengths=None,
                   fixed_timesteps: Optional[int] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Check and convert token-id input for an Embedding model.

    Args:
        X: (N, T) integer ids, or a list of (T_i,) id arrays of varying length (right-padded with 0).
        vocabulary_size: ids must lie in [0, vocabulary_size); 0 is padding for mask_zero models.
        lengths: optional (N,) real lengths of right-padded rows of an array X.
        fixed_timesteps: T when the model's time axis is fixed, else None.
    Returns:
        X as C-contiguous int64 (N, T) with ids past each length set to 0, and lengths (N,) or None.
    Raises:
        InputError: not integers, wrong rank, empty, ids outside the vocabulary, bad lengths.
    """
    if isinstance(X, (list, tuple)):
        if lengths is not None:
            raise InputError("lengths: pass lengths only with a padded array, not with a list of sequences")
        if len(X) == 0:
            raise InputError("X: expected at least one sequence, got an empty list")
        rows = [np.asarray(s) for s in X]
        for i, r in enumerate(rows):
            if r.ndim != 1 or r.shape[0] == 0:
                raise InputError(f"X[{i}]: expected a non-empty 1-D array of token ids, got shape {r.shape}")
        lens = np.array([r.shape[0] for r in rows], np.int64)
        arr = np.zeros((len(rows), int(lens.max())), dtype=np.result_type(*rows))
        for i, r in enumerate(rows):
            arr[i, : r.shape[0]] = r
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise InputError(f"X: expected token ids of shape (samples, timesteps), got rank {arr.ndim} shape {arr.shape}")
        if 0 in arr.shape:
            raise InputError(f"X: expected at least one sample and one timestep, got shape {arr.shape}")
        lens = None if lengths is None else check_lengths(lengths, arr.shape[0], arr.shape[1])
    if arr.dtype.kind not in "iu":
        raise InputError(f"X: expected integer token ids, got dtype {arr.dtype}")
    ids = np.ascontiguousarray(arr, dtype=np.int64)
    if lens is not None:
        ids[np.arange(ids.shape[1])[None, :] >= lens[:, None]] = 0
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocabulary_size:
        raise InputError(f"X: expected token ids in [0, {vocabulary_size - 1}], got ids in [{lo}, {hi}]")
    if fixed_timesteps is not None and ids.shape[1] != fixed_timesteps:
        raise InputError(f"X: expected {fixed_timesteps} timesteps, got {ids.shape[1]}")
    if lens is not None and (lens == ids.shape[1]).all():
        lens = None
    return ids, lens
