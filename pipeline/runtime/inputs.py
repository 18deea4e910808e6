"""Validation of user inputs before they reach onnxruntime.

Owns: turning whatever a caller passes (array, list of arrays, lengths) into a checked float32
(N, T, F) batch plus lengths, or raising ``InputError`` with one line naming what was expected
and what was received, and the sample / timestep / feature it is about in the error's fields
(with the sample-free wording for ``InputError.without_sample``). Imports: numpy and pipeline
light modules only (TF-free).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

from pipeline.errors import InputError
from pipeline.preprocessing import apply_preprocessing
from pipeline.sequences import pad_sequences

__all__ = ["ArrayLike", "prepare_features", "prepare_tokens", "check_lengths", "check_finite", "check_scaled_finite",
           "dot_check_suffices", "quick_values_ok", "mask_steps", "lengths_from_mask",
           "refuse_masked_real_steps"]

ArrayLike = Union[np.ndarray, Sequence[np.ndarray]]


def _numeric_problem(arr: np.ndarray) -> Optional[str]:
    """Why ``arr`` cannot be features (not float or int), or None."""
    if arr.dtype.kind not in "iuf":
        kind = {"b": "bool", "O": "Python objects", "U": "strings", "S": "bytes", "c": "complex"}.get(arr.dtype.kind, str(arr.dtype))
        return f"expected numeric features (float or int), got {kind} (dtype {arr.dtype})"
    return None


def _float32_range_problem(arr: np.ndarray) -> Optional[str]:
    """Finite values that would become Inf when cast to float32 (float64 or wider input), or None."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        finite = arr[np.isfinite(arr)]
        big = float(np.abs(finite).max(initial=0.0))
        if big > float(np.finfo(np.float32).max):
            return f"values up to {big:.3g} overflow float32 (max {np.finfo(np.float32).max:.3g})"
    return None


def _sequence_problem(s, n_features: int) -> tuple[Optional[np.ndarray], Optional[str]]:
    """One sequence of a list: (it as an array, None), or (None, why it cannot be a (T_i, F) sequence)."""
    try:
        arr = np.asarray(s)
    except (ValueError, TypeError) as exc:
        return None, f"expected a (timesteps, {n_features}) numeric array, got {exc}"
    why = _numeric_problem(arr)
    if why is None and arr.ndim != 2:
        why = f"expected shape (timesteps, {n_features}), got rank {arr.ndim} shape {arr.shape}"
    elif why is None and arr.shape[1] != n_features:
        why = f"expected {n_features} features, got {arr.shape[1]}"
    elif why is None and arr.shape[0] == 0:
        why = "expected at least one timestep, got 0"
    return (None, why) if why else (arr, _float32_range_problem(arr))


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
        f"({int(bad.sum())} non-finite values in all)", sample=i, timestep=t, feature=f,
        sample_message=f"{what}: expected finite values, got {X[i, t, f]} at timestep {t}, feature {f} "
                       f"({int(bad[i].sum())} non-finite values in this sample)"
    )


def _real_steps(shape: tuple, lengths: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """(N, T) True on the steps before each row's length, or None when every step is real."""
    return None if lengths is None else np.arange(shape[1])[None, :] < lengths[:, None]


# A finite float32 x.x means every |x| < sqrt(float32 max) = 1.8447e19 (and no NaN/Inf): one BLAS
# pass. Whether that is enough depends on the scaling (see dot_check_suffices).
_DOT_BOUND = 1.85e19


def dot_check_suffices(spec: dict, n_features: int) -> bool:
    """True when every raw value within +-_DOT_BOUND scales to a finite float32 under ``spec``.

    Float32 rounding is monotone, so checking the two bounds per feature is exact. True for every
    standardization fitted on real data; when False callers always run ``check_scaled_finite``.
    """
    bounds = np.array([[[-_DOT_BOUND] * n_features, [_DOT_BOUND] * n_features]], np.float32)  # (1, 2, F)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(apply_preprocessing(bounds, spec)).all())


def quick_values_ok(X: np.ndarray) -> bool:
    """One pass over float32 X (any shape, C-contiguous): no NaN/Inf and every |x| < _DOT_BOUND.

    False only means "run the exact check" (it also fires for garbage in padding beyond lengths).
    """
    flat = X.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return math.isfinite(float(flat.dot(flat)))


def check_scaled_finite(X: np.ndarray, lengths: Optional[np.ndarray], spec: dict) -> None:
    """Raise InputError unless the real steps of raw X (N, T, F) are finite, also once the graph scales them.

    Without computing the scaled batch: float32 subtraction and division round monotonically, so
    the scaled values are finite iff the scaled per-feature minimum and maximum are (and a NaN or
    Inf in X makes those non-finite too). Only a failure scales X, to name the first bad value.
    """
    real = _real_steps(X.shape, lengths)
    if real is None:
        lo, hi = X.min(axis=(0, 1)), X.max(axis=(0, 1))  # (F,) each
    else:
        where = real[:, :, None]
        lo = X.min(axis=(0, 1), where=where, initial=np.inf)
        hi = X.max(axis=(0, 1), where=where, initial=-np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        bounds = apply_preprocessing(np.stack([lo, hi])[None].astype(np.float32), spec)  # (1, 2, F)
    if np.isfinite(bounds).all():
        return
    check_finite(X, lengths)  # a NaN/Inf already in the raw input: name it
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = apply_preprocessing(X, spec, lengths)
    check_finite(scaled, lengths, "X after standardization")


def mask_steps(X: np.ndarray, mask_value: float) -> np.ndarray:
    """(N, T) True on the steps whose raw values all equal ``mask_value`` (X (N, T, F) or token ids (N, T))."""
    with np.errstate(invalid="ignore"):
        eq = X == np.asarray(mask_value, X.dtype if X.dtype.kind == "f" else np.float64)
    return eq.all(axis=2) if X.ndim == 3 else eq


def lengths_from_mask(on_mask: np.ndarray) -> np.ndarray:
    """(N,) lengths of rows whose trailing mask-valued steps are padding, as Keras reads them.

    Raises InputError for a row that is padding only (no real step).
    """
    N, T = on_mask.shape
    empty = on_mask.all(axis=1)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        why = (f"every one of its {T} timesteps equals the mask value, so it is all padding; expected at least one "
               "real step (or pass lengths)")
        raise InputError(f"sample {i}: {why}", sample=i, sample_message=why)
    trailing = np.argmax(~on_mask[:, ::-1], axis=1)  # (N,) mask-valued steps after the last real one
    return (T - trailing).astype(np.int64)


def refuse_masked_real_steps(on_mask: np.ndarray, lengths: np.ndarray, mask_value: float,
                             where: str = "sample {i}, timestep {t}", where_in_sample: str = "timestep {t}") -> None:
    """InputError naming the first real step (before its row's length) whose values all equal ``mask_value``.

    The model's own Masking layer would skip such a step (Keras does); a length cannot express a
    skipped step inside a row, so the runtime refuses it instead of answering differently from Keras.
    """
    bad = on_mask & (np.arange(on_mask.shape[1])[None, :] < lengths[:, None])
    if bad.any():
        i, t = (int(v) for v in np.argwhere(bad)[0])
        why = (f"every value equals the mask value {mask_value:g} of the model's Masking layer on a real step (before "
               "the row's length); Keras would skip it and lengths cannot express a skipped step: expected "
               "mask-valued steps only as trailing padding")
        raise InputError(f"{where.format(i=i, t=t)}: {why}", sample=i, timestep=t,
                         sample_message=f"{where_in_sample.format(t=t)}: {why}")


def check_lengths(lengths, n: int, t: int) -> np.ndarray:
    """Check ``lengths`` are (n,) whole numbers in [1, t] (ints, or floats that are whole); return int64.

    Raises InputError with one line: wrong rank or count, booleans, strings or objects, NaN or a
    fraction, a value outside [1, t].
    """
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError) as exc:
        raise InputError(f"lengths: expected ({n},) integers, got {type(lengths).__name__} ({exc})") from None
    if arr.ndim != 1:
        raise InputError(f"lengths: expected shape ({n},), one integer per row of X, got rank {arr.ndim} "
                         f"shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"lengths: expected {n} lengths, one per row of X, got {arr.shape[0]}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"lengths: expected whole numbers, got {arr[i].item()!r} at sample {i}")
    elif arr.dtype.kind not in "iu":
        kind = {"b": "booleans", "O": "Python objects", "U": "strings", "S": "bytes", "c": "complex numbers"}.get(
            arr.dtype.kind, str(arr.dtype))
        raise InputError(f"lengths: expected ({n},) integers, got {kind} (dtype {arr.dtype})")
    if n and ((arr < 1).any() or (arr > t).any()):
        i = int(np.flatnonzero((arr < 1) | (arr > t))[0])
        raise InputError(f"lengths: expected values in [1, {t}] (the timesteps of X), got {arr[i].item()!r} at sample {i}")
    return arr.astype(np.int64)


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
            arr, why = _sequence_problem(s, n_features)
            if why is not None:
                raise InputError(f"X[{i}]: {why}", sample=i, sample_message=why)
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
    why = _numeric_problem(arr)
    if why is not None:
        raise InputError(f"X: {why}")
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
    lens = None if lengths is None else check_lengths(lengths, n, t)
    why = _float32_range_problem(arr if lens is None or (lens == t).all() else arr[_real_steps(arr.shape, lens)])
    if why is not None:  # only the real steps: whatever lies past a row's length never reaches the model
        raise InputError(f"X: {why}")
    with np.errstate(over="ignore", invalid="ignore"):  # only steps past the lengths can overflow here
        X32 = np.ascontiguousarray(arr, dtype=np.float32)
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
                why = f"expected a non-empty 1-D array of token ids, got shape {r.shape}"
                raise InputError(f"X[{i}]: {why}", sample=i, sample_message=why)
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
