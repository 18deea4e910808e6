"""Training loop: seeding, the update budget with its cosine learning-rate schedule, fitting.

Owns: making runs deterministic, turning the budget into a sample order, and fitting a compiled
Keras model on scaled data.
Imports: tensorflow, keras (build stage only). Reads/writes: nothing on disk.

Why a fixed budget and no early stopping: on small sets (20 to 270 training series in the public
sets of README "Accuracy on public data") a validation split takes a fifth of the data and early
stopping then reacts to a handful of series. A cosine decay to zero over a fixed number of updates
needs no validation data, and every row trains the model.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pipeline import progress
from pipeline.settings import AUTO_BATCH, AUTO_UPDATES, TrainConfig

__all__ = ["seed_everything", "fit", "plan_schedule", "class_weights", "sample_order", "TrainResult"]

ROUND_UPDATES = 100  # small sets: one round (a fit call, a log line, a history point) is this many updates


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TF ops deterministic."""
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


@dataclass
class TrainResult:
    """What training produced: the history per round of updates and the schedule used."""

    history: dict[str, list[float]] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)


def plan_schedule(n_train: int, cfg: TrainConfig, timesteps: int) -> dict[str, Any]:
    """Turn a ``TrainConfig`` and the training-set size into a batch size and a number of updates.

    The batch is ``batch_size`` (unset: n / 64 rows, between 16 and 64), or the whole set when smaller.
    The budget is ``epochs`` passes over the data when set, else ``updates`` (unset: 300,000 / T,
    between 1000 and 3000, T = ``timesteps``). Updates are grouped in rounds (Keras epochs): a pass
    over the data, but at least ``ROUND_UPDATES`` updates, so a tiny set does not pay Keras' per-epoch
    cost every two updates.
    """
    n = max(int(n_train), 1)
    per, low, high = AUTO_BATCH
    wanted = cfg.batch_size if cfg.batch_size is not None else min(high, max(low, math.ceil(n / per)))
    batch = int(min(wanted, n))
    per_pass = math.ceil(n / batch)
    if cfg.epochs is not None:
        updates = int(cfg.epochs) * per_pass
    elif cfg.updates is not None:
        updates = int(cfg.updates)
    else:
        budget, low, high = AUTO_UPDATES
        updates = min(high, max(low, math.ceil(budget / max(int(timesteps), 1))))
    per_round = min(updates, max(per_pass, ROUND_UPDATES))
    rounds = math.ceil(updates / per_round)
    return {"updates": rounds * per_round, "batch_size": batch, "rounds": rounds, "updates_per_round": per_round,
            "passes_over_data": round(rounds * per_round * batch / n, 1)}


def class_weights(y: np.ndarray, mode: str, n_classes: int = 2) -> Optional[dict[int, float]]:
    """``balanced``: weight n / (k * n_c) per class c of k (mean weight over rows 1); ``none``: None."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)  # (k,)
    if (counts == 0).any():
        return None
    return {c: float(counts.sum() / (len(counts) * counts[c])) for c in range(len(counts))}


def sample_order(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` row indices: whole shuffled passes over range(n) one after another (every row once per pass)."""
    rng = np.random.default_rng(seed)
    passes = math.ceil(count / n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def fit(model, X_train: np.ndarray, y_train: np.ndarray, X_val: Optional[np.ndarray], y_val: Optional[np.ndarray],
        cfg: TrainConfig, seed: int = 0, n_classes: int = 2) -> TrainResult:
    """Fit for the planned number of updates, the learning rate decaying from ``learning_rate`` to 0.

    X_* are scaled and padded (N, T, F) float32 (padded steps hold the model's padding value); y_* are
    (N,) class indices in 0 .. n_classes - 1. X_val (optional) is only evaluated after each round, for the
    history; it chooses nothing here. The final weights are kept.
    Two classes: a model with m outputs (a ``MemberEnsemble``: one logit per member) gets each label m
    times, as floats. k >= 3 classes: the model gets the (N,) class indices (sparse cross-entropy; the
    ensemble's loss gives the label to each member itself).
    """
    import keras

    plan = plan_schedule(len(y_train), cfg, X_train.shape[1])
    weights = class_weights(y_train, cfg.class_weight, n_classes)
    model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=plan["updates"], alpha=0.0)
    if cfg.clipnorm:
        model.optimizer.global_clipnorm = float(cfg.clipnorm)  # read when the train step is traced
    quiet = str(cfg.verbose) == "0"  # else one line per round (Keras' own "Epoch r/r" header would mislead)
    outputs = int(model.output_shape[-1])

    def targets(y):  # (N,) -> (N,) or (N, m)
        if n_classes > 2:
            return y.astype(np.int64)
        y = y.astype(np.float32)
        return y if outputs == 1 else np.repeat(y[:, None], outputs, axis=1)

    order = sample_order(len(y_train), plan["updates"] * plan["batch_size"], seed)
    sample_weight = None if weights is None else np.array([weights[c] for c in sorted(weights)], np.float32)[y_train]
    Y_train = targets(y_train)
    validation = None if X_val is None else (X_val, targets(y_val))
    history: dict[str, list[float]] = {}
    started = time.perf_counter()
    rows_per_round = plan["updates_per_round"] * plan["batch_size"]
    for r in range(plan["rounds"]):  # one fit call per round, on that round's rows gathered in order
        rows = order[r * rows_per_round:(r + 1) * rows_per_round]
        hist = model.fit(
            X_train[rows], Y_train[rows], sample_weight=None if sample_weight is None else sample_weight[rows],
            batch_size=plan["batch_size"], initial_epoch=r, epochs=r + 1, shuffle=False, verbose=0,
            validation_data=validation,
        )
        for k, vals in hist.history.items():
            history.setdefault(k, []).extend(float(v) for v in vals)
        if not quiet:
            shown = ", ".join(f"{k} {history[k][-1]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                              if k in history)
            progress.log(f"  round {r + 1}/{plan['rounds']}: {(r + 1) * plan['updates_per_round']} updates, {shown}, "
                         f"{time.perf_counter() - started:.0f} s")
    plan["class_weight"] = weights and {str(k): v for k, v in weights.items()}
    return TrainResult(history=history, schedule=plan)
