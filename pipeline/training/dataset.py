"""Training data: the embedded default task, labelled data files, and train/validation/test splits.

Owns: the seeded "which pulse came first" task, label encoding (k >= 2 classes), the checks a training
file must pass, stratified splits, and the padding of variable-length rows (PAD_VALUE, pad_past_lengths:
TensorFlow-free, so bad data is refused before TensorFlow is imported).

Labels: integer labels whose smallest training value is 0 are class ids 0..k-1 (k = the largest id + 1:
every id must occur in the training data, and test ids must be below k); any other labels (strings,
integers starting above 0) are class names, k = the distinct training labels. Class names are sorted
(numbers numerically) and encoded to indices 0..k-1 in that order. Imports: numpy, pipeline.datafiles, pipeline.settings (stdlib only).
Reads: the data files named in the settings. Writes: nothing.

Default task: every sequence is Gaussian noise (T, F); a pulse (width 3, height 3) is added to
feature 0 at time t_a and to feature 1 at a different time t_b. The label is 1 when the
feature-0 pulse comes first. Both classes have the same per-feature mean and std over time, so
an order-blind model stays near chance, while a recurrent model can read the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipeline.datafiles import SequenceData, read_sequences
from pipeline.errors import DataFormatError
from pipeline.settings import BuildConfig

__all__ = ["Splits", "make_order_task", "stratified_split", "encode_labels", "encode_test_labels", "load_splits",
           "pad_to"]

PULSE_WIDTH = 3
PULSE_HEIGHT = 3.0


@dataclass
class Splits:
    """Train, validation and test parts of one dataset; ``val`` is None without a validation split."""

    train: SequenceData
    val: Optional[SequenceData]
    test: SequenceData


def make_order_task(n_samples: int, timesteps: int = 50, features: int = 8, seed: int = 0) -> SequenceData:
    """Generate the default task.

    Args:
        n_samples: number of sequences N.
        timesteps: T, at least 2 * PULSE_WIDTH + 2.
        features: F, at least 2.
        seed: numpy seed; the same arguments always give the same arrays.
    Returns:
        SequenceData with X (N, T, F) float32 and y (N,) int64 in {0, 1}.
    """
    if timesteps < 2 * PULSE_WIDTH + 2 or features < 2:
        raise ValueError(f"default task needs timesteps >= {2 * PULSE_WIDTH + 2} and features >= 2")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, timesteps, features)).astype(np.float32)  # (N, T, F)
    slots = timesteps - PULSE_WIDTH + 1
    t_a = rng.integers(0, slots, size=n_samples)
    t_b = rng.integers(0, slots - 1, size=n_samples)
    t_b = np.where(t_b >= t_a, t_b + 1, t_b)  # distinct start times
    steps = np.arange(PULSE_WIDTH)
    rows = np.arange(n_samples)[:, None]
    X[rows, t_a[:, None] + steps, 0] += PULSE_HEIGHT
    X[rows, t_b[:, None] + steps, 1] += PULSE_HEIGHT
    y = (t_a < t_b).astype(np.int64)
    lengths = np.full(n_samples, timesteps, dtype=np.int64)
    return SequenceData(X=X, lengths=lengths, y=y, ids=np.array([str(i) for i in range(n_samples)]))


def _take(data: SequenceData, idx: np.ndarray) -> SequenceData:
    T = int(data.lengths[idx].max()) if len(idx) else data.X.shape[1]
    return SequenceData(
        X=data.X[idx, :T],
        lengths=data.lengths[idx],
        y=None if data.y is None else data.y[idx],
        ids=data.ids[idx],
        feature_names=data.feature_names,
    )


def stratified_split(data: SequenceData, fraction: float, seed: int) -> tuple[SequenceData, SequenceData]:
    """Split into (rest, held_out) with ``fraction`` of each class held out (at least one each)."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(data.y):
        members = np.flatnonzero(data.y == cls)
        rng.shuffle(members)
        k = int(round(fraction * len(members)))
        k = min(max(k, 1), len(members) - 1)
        held.append(members[:k])
    held_idx = np.sort(np.concatenate(held))
    rest_idx = np.setdiff1d(np.arange(data.n_samples), held_idx)
    return _take(data, rest_idx), _take(data, held_idx)


def _shown(values) -> str:
    """At most five labels as Python reprs, for an error message."""
    values = list(values)
    return ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")


def _are_ids(classes: np.ndarray) -> bool:
    """Integer labels whose smallest value is 0: class ids 0..k-1."""
    return classes.dtype.kind in "iu" and len(classes) > 0 and int(classes[0]) == 0


def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list]:
    """Map raw training labels (N,) to class indices 0..k-1 (N,) int64; returns them and the k class names.

    Raises DataFormatError (one line) for fewer than 2 classes, or class ids 0..k-1 of which some have
    no training sample.
    """
    if np.ndim(y) != 1:
        raise DataFormatError(f"{where}: expected one label per sample (N,), got labels of shape {np.shape(y)}: "
                              "gru-build trains binary and multi-class models; a multi-label model trained in Keras "
                              "exports with gru-export")
    classes = np.unique(y)  # sorted; numbers numerically
    names = [c.item() if hasattr(c, "item") else c for c in classes]
    if _are_ids(classes):
        missing = sorted(set(range(int(classes[-1]) + 1)) - set(names))
        if missing:
            raise DataFormatError(
                f"{where}: expected a training sample of every class id 0..{int(classes[-1])} (integer labels "
                f"starting at 0 are class ids), got none of class {_shown(missing)}")
    if len(classes) < 2:
        raise DataFormatError(f"{where}: expected at least 2 classes, got {len(classes)} ({_shown(names)})")
    return np.searchsorted(classes, y).astype(np.int64), names


def encode_test_labels(y: np.ndarray, names: list, where: str, train_where: str) -> np.ndarray:
    """Map a test file's raw labels (N,) to the training classes' indices (N,) int64.

    Raises DataFormatError (one line) for a class id at or above k, or any label the training data lacks.
    """
    k = len(names)
    index = {name: i for i, name in enumerate(names)}
    values = [v.item() if hasattr(v, "item") else v for v in np.asarray(y).tolist()]
    if _are_ids(np.asarray(names)) and np.asarray(y).dtype.kind in "iu":
        high = sorted({v for v in values if v >= k})
        if high:
            raise DataFormatError(f"{where}: expected class ids 0..{k - 1} (the {k} classes of {train_where}), "
                                  f"got {_shown(high)}")
    unknown = sorted({v for v in values if v not in index}, key=str)
    if unknown:
        raise DataFormatError(f"{where}: labels {sorted(map(str, unknown))} do not occur in the training data {names}")
    return np.array([index[v] for v in values], np.int64)


def _labelled(data: SequenceData, where: str) -> SequenceData:
    if data.y is None:
        raise DataFormatError(f"{where}: expected labels (NPZ 'y', CSV 'label' column, .ts class label), found none")
    bad = ~np.isfinite(data.X) & (np.arange(data.X.shape[1])[None, :, None] < data.lengths[:, None, None])
    if bad.any():
        i, t, f = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{where}: expected finite feature values, got {int(bad.sum())} NaN/Inf (first at sample {i}, "
            f"timestep {t}, feature {f}); fill or drop them before building"
        )
    return data


def load_splits(cfg: BuildConfig) -> tuple[Splits, list]:
    """Train/val/test splits with labels encoded to class indices 0..k-1, and the k class names."""
    d = cfg.data
    if d.path is None:
        data = make_order_task(d.n_samples, d.timesteps, d.features, seed=cfg.seed)
        test_data = None
    else:
        data = _labelled(read_sequences(d.path), d.path)
        test_data = _labelled(read_sequences(d.test_path), d.test_path) if d.test_path else None
    y, names = encode_labels(data.y, d.path or "default task")
    data.y = y
    if test_data is not None:
        if test_data.n_features != data.n_features:
            raise DataFormatError(f"{d.test_path}: expected {data.n_features} features like the training data, got {test_data.n_features}")
        test_data.y = encode_test_labels(test_data.y, names, d.test_path, d.path)
        rest = data
    else:
        counts = np.bincount(y, minlength=len(names))
        if counts.min() < 3:
            raise DataFormatError(f"{d.path}: each class needs at least 3 samples to split train/test, got {counts.tolist()}")
        rest, test_data = stratified_split(data, d.test_fraction, cfg.seed)
    if d.val_fraction == 0:
        return Splits(rest, None, test_data), names
    train, val = stratified_split(rest, d.val_fraction, cfg.seed + 1)
    return Splits(train, val, test_data), names


# What every padded step (t >= length) of the scaled inputs holds, and the Masking layer's mask value: exact
# in float32 and far below anything standardized data reaches (training steps: |z| <= sqrt(number of steps);
# gru-build refuses any scaled value <= PAD_GUARD), so the mask comes from the lengths and real all-zero
# steps stay data.
PAD_VALUE = float(np.float32(-1e30))
PAD_GUARD = -1e29  # a scaled real value at or below this could be mistaken for PAD_VALUE: refused


def pad_past_lengths(Z: np.ndarray, lengths: np.ndarray, where: str, ids) -> np.ndarray:
    """Scaled Z (N, T, F) with every step t >= length set to PAD_VALUE, the Masking layer's mask value.

    Refuses (one line) a real scaled value at or below PAD_GUARD: it could be read as padding.
    """
    real = np.arange(Z.shape[1])[None, :] < lengths[:, None]  # (N, T)
    low = (Z <= PAD_GUARD) & real[..., None]
    if low.any():
        i, t, f = (int(v) for v in np.argwhere(low)[0])
        raise DataFormatError(
            f"{where}: sample {ids[i] if ids is not None else i} timestep {t} feature {f} scales to {Z[i, t, f]:.3g}; "
            f"expected scaled values above {PAD_GUARD:g} (the padding value is {PAD_VALUE:g})")
    return np.where(real[..., None], Z, np.float32(PAD_VALUE))  # (N, T, F)


def pad_to(data: SequenceData, T: int) -> SequenceData:
    """Right-pad (or cut) ``data`` to T timesteps; lengths are capped at T."""
    if data.X.shape[1] == T:
        return data
    X = np.zeros((data.n_samples, T, data.n_features), np.float32)
    X[:, : data.X.shape[1]] = data.X[:, :T]
    return SequenceData(X, np.minimum(data.lengths, T), data.y, data.ids, data.feature_names)
