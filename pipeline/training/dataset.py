"""The embedded default dataset and train/validation/test splitting.

Owns: the seeded "which pulse came first" task and stratified splits of any labelled data.
Imports: numpy and pipeline light modules only. Reads/writes: nothing.

Default task: every sequence is Gaussian noise (T, F); a pulse (width 3, height 3) is added to
feature 0 at time t_a and to feature 1 at a different time t_b. The label is 1 when the
feature-0 pulse comes first. Both classes have the same per-feature mean and std over time, so
an order-blind model stays near chance, while a recurrent model can read the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.datafiles import SequenceData

__all__ = ["Splits", "make_order_task", "stratified_split"]

PULSE_WIDTH = 3
PULSE_HEIGHT = 3.0


@dataclass
class Splits:
    """Train, validation and test parts of one dataset (all SequenceData)."""

    train: SequenceData
    val: SequenceData
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
