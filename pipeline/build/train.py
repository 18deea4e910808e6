"""Training: seeding, fitting with early stopping, evaluation.

Owns: making runs deterministic and fitting a compiled Keras model on scaled data.
Imports: tensorflow, keras (build stage only). Reads/writes: nothing on disk.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["seed_everything", "fit", "evaluate", "TrainResult"]


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
    """What training produced: per-epoch history and the epoch whose weights were kept."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0


def fit(model, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
        epochs: int, batch_size: int, patience: int, verbose: Any = "auto") -> TrainResult:
    """Fit with early stopping on validation loss, restoring the best weights.

    X_* are scaled and padded (N, T, F) float32; y_* are (N,) in {0, 1}.
    """
    import keras

    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
    )
    if verbose == "auto":  # a live progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    verbose = int(verbose)
    hist = model.fit(
        X_train, y_train.astype(np.float32),
        validation_data=(X_val, y_val.astype(np.float32)),
        epochs=epochs, batch_size=batch_size, shuffle=True,
        callbacks=[stop], verbose=verbose,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    val_loss = history.get("val_loss", [0.0])
    return TrainResult(history=history, best_epoch=int(np.argmin(val_loss)) + 1, epochs_run=len(val_loss))


def keras_proba(model, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities of class 1 from Keras in inference mode: (N, T, F) -> (N,) float32."""
    out = []
    for start in range(0, len(X), batch_size):
        out.append(np.asarray(model(X[start:start + batch_size], training=False)).reshape(-1))
    return np.concatenate(out).astype(np.float32)


def evaluate(model, X: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and binary cross-entropy of the model on scaled X (N, T, F), y (N,) in {0, 1}."""
    p = keras_proba(model, X).astype(np.float64)
    eps = 1e-7
    loss = -np.mean(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1)))
    return {"accuracy": float(((p >= threshold).astype(int) == y).mean()), "loss": float(loss), "n": int(len(y))}
