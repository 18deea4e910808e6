"""Keras model construction from a ``ModelConfig``.

Owns: the architecture [Masking] -> GRU stack (optionally Bidirectional) -> [pooling] ->
Dense(1, sigmoid), compiled with Adam and binary cross-entropy.
Imports: keras (heavy; build stage only). Reads/writes: nothing.
"""

from __future__ import annotations

from typing import Optional

import keras

from pipeline.build.config import ModelConfig

__all__ = ["build_model", "INPUT_NAME"]

INPUT_NAME = "x"


def build_model(cfg: ModelConfig, n_features: int, masking: bool, learning_rate: float = 1e-3,
                timesteps: Optional[int] = None) -> keras.Model:
    """Build and compile the classifier.

    Args:
        cfg: architecture settings.
        n_features: F, features per timestep.
        masking: add Masking(mask_value=0.0) so right-padded rows are skipped.
        learning_rate: Adam learning rate.
        timesteps: fixed T, or None for a dynamic time axis (the default).
    Returns:
        a compiled keras.Model, input (batch, time, F) float32 -> (batch, 1) probability.
    """
    inputs = keras.Input(shape=(timesteps, n_features), name=INPUT_NAME)  # (batch, time, F)
    x = inputs
    if masking:
        x = keras.layers.Masking(mask_value=0.0, name="masking")(x)
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        gru = keras.layers.GRU(
            cfg.units,
            activation=cfg.activation,
            recurrent_activation=cfg.recurrent_activation,
            use_bias=cfg.use_bias,
            reset_after=cfg.reset_after,
            dropout=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout,
            go_backwards=cfg.go_backwards and not cfg.bidirectional,
            return_sequences=not last or cfg.head != "last",
            name=f"gru_{i}",
        )
        if cfg.bidirectional:
            gru = keras.layers.Bidirectional(gru, merge_mode=cfg.merge_mode, name=f"bidirectional_{i}")
        x = gru(x)
    if cfg.head == "avg":
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    elif cfg.head == "max":
        x = keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="classifier")(x)  # (batch, 1)
    model = keras.Model(inputs, outputs, name="gru_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model
