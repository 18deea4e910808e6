"""Training loop: seeding, a step-budgeted schedule, fitting with early stopping.

Owns: making runs deterministic and fitting a compiled Keras model on scaled data.
Imports: tensorflow, keras (build stage only). Reads/writes: nothing on disk.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.settings import TrainConfig

__all__ = ["seed_everything", "fit", "plan_schedule", "class_weights", "TrainResult"]


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
    """What training produced: per-epoch history, the epoch whose weights were kept, the schedule used."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    schedule: dict[str, Any] = field(default_factory=dict)


def plan_schedule(n_train: int, cfg) -> dict[str, Any]:
    """Turn a ``TrainConfig`` and the training-set size into concrete epochs/batch/patience.

    The budget is in optimizer updates: small files get a smaller batch (>= 4 updates per epoch
    when possible) and more epochs (>= ``min_steps`` updates, at most ``max_epochs`` epochs);
    early-stopping patience covers at least ``patience_steps`` updates.
    """
    n = max(int(n_train), 1)
    batch = int(min(cfg.batch_size, max(8, math.ceil(n / 4))))
    steps = math.ceil(n / batch)
    if cfg.epochs is None:
        epochs = min(cfg.max_epochs, max(cfg.min_epochs, math.ceil(cfg.min_steps / steps)))
    else:
        epochs = int(cfg.epochs)
    patience = max(cfg.patience, math.ceil(cfg.patience_steps / steps))
    lr_patience = cfg.lr_patience if cfg.lr_patience is not None else max(1, patience // 2)
    return {"epochs": int(epochs), "batch_size": batch, "steps_per_epoch": int(steps),
            "patience": int(patience), "lr_patience": int(lr_patience)}


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """``balanced``: weight n / (2 * n_c) per class (mean weight 1); ``none``: None."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2).astype(np.float64)
    if (counts == 0).any():
        return None
    return {c: float(counts.sum() / (2.0 * counts[c])) for c in (0, 1)}


def fit(model, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
        cfg: TrainConfig) -> TrainResult:
    """Fit with early stopping on validation loss, restoring the best weights.

    X_* are scaled and padded (N, T, F) float32; y_* are (N,) in {0, 1}. The schedule is the
    step-budgeted one of ``plan_schedule``, with learning-rate reduction on plateau, class weights
    and gradient clipping as ``cfg`` says.
    """
    import keras

    plan = plan_schedule(len(y_train), cfg)
    weights = class_weights(y_train, cfg.class_weight)
    lr_factor, min_lr, verbose = cfg.lr_factor, cfg.min_lr, cfg.verbose
    if cfg.clipnorm and getattr(model, "optimizer", None) is not None:
        model.optimizer.global_clipnorm = float(cfg.clipnorm)  # read when the train step is traced
    callbacks = [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=plan["patience"], restore_best_weights=True, verbose=0
    )]
    if lr_factor < 1.0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=lr_factor, patience=plan["lr_patience"], min_lr=min_lr, verbose=0))
    if verbose == "auto":  # a live progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    verbose = int(verbose)
    hist = model.fit(
        X_train, y_train.astype(np.float32),
        validation_data=(X_val, y_val.astype(np.float32)),
        epochs=plan["epochs"], batch_size=plan["batch_size"], shuffle=True,
        callbacks=callbacks, verbose=verbose, class_weight=weights,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    val_loss = history.get("val_loss", [0.0])
    plan["class_weight"] = weights and {str(k): v for k, v in weights.items()}
    return TrainResult(history=history, best_epoch=int(np.argmin(val_loss)) + 1, epochs_run=len(val_loss),
                       schedule=plan)
