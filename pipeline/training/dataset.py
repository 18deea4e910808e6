"""Training data: the embedded default task, labelled data files, and train/validation/test splits.

Owns: the seeded "which pulse came first" task, label encoding, the checks a training file must
pass, and stratified splits. Imports: numpy, pipeline.datafiles, pipeline.settings (stdlib only).
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

__all__ = ["Splits", "make_order_task", "stratified_split", "encode_labels", "load_splits", "pad_to"]

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


def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list]:
    """Map raw labels to {0, 1}; class names sorted (numbers numerically). Exactly two classes."""
    classes = np.unique(y)
    if len(classes) != 2:
        shown = ", ".join(repr(c.item() if hasattr(c, "item") else c) for c in classes[:5])
        raise DataFormatError(f"{where}: expected exactly two classes, got {len(classes)} ({shown}{', ...' if len(classes) > 5 else ''})")
    names = [c.item() if hasattr(c, "item") else c for c in classes]
    return (y == classes[1]).astype(np.int64), names


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
    """Train/val/test splits with labels encoded to {0, 1}, and the class names."""
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
        unknown = set(np.unique(test_data.y).tolist()) - set(names)
        if unknown:
            raise DataFormatError(f"{d.test_path}: labels {sorted(map(str, unknown))} do not occur in the training data {names}")
        test_data.y = (test_data.y == np.asarray(names, dtype=test_data.y.dtype)[1]).astype(np.int64)
        rest = data
    else:
        if min(np.bincount(y)) < 3:
            raise DataFormatError(f"{d.path}: each class needs at least 3 samples to split train/test, got {np.bincount(y).tolist()}")
        rest, test_data = stratified_split(data, d.test_fraction, cfg.seed)
    if d.val_fraction == 0:
        return Splits(rest, None, test_data), names
    train, val = stratified_split(rest, d.val_fraction, cfg.seed + 1)
    return Splits(train, val, test_data), names


def pad_to(data: SequenceData, T: int) -> SequenceData:
    """Right-pad (or cut) ``data`` to T timesteps; lengths are capped at T."""
    if data.X.shape[1] == T:
        return data
    X = np.zeros((data.n_samples, T, data.n_features), np.float32)
    X[:, : data.X.shape[1]] = data.X[:, :T]
    return SequenceData(X, np.minimum(data.lengths, T), data.y, data.ids, data.feature_names)
