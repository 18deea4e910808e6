"""Keras model construction from a ``ModelConfig``.

Owns: the architecture [Masking] -> GRU stack (optionally Bidirectional) -> [pooling] ->
Dense(1, sigmoid), compiled with Adam and binary cross-entropy.
Imports: keras (heavy; build stage only). Reads/writes: nothing.
"""

from __future__ import annotations

import keras

from pipeline import artifact
from pipeline.settings import ModelConfig

__all__ = ["build_model", "INPUT_NAME", "SpectralNormCap"]

INPUT_NAME = artifact.INPUT_NAME


@keras.saving.register_keras_serializable(package="gru_pipeline")
class SpectralNormCap(keras.constraints.Constraint):
    """After each update, scale a matrix down so its largest singular value is at most ``max_value``.

    On a GRU's recurrent kernel (H, 3H) this bounds how much one step can amplify a change in the
    hidden state. Unbounded, small-data training on long series drifts to kernels with spectral
    norm 7-12 whose float32 evaluation is chaotic: Keras and onnxruntime (and Keras and a float64
    evaluation of the same weights) then differ by 1e-5..1e-3, and the equivalence check refuses
    the model. Inference is unaffected: the constraint only shapes training.
    """

    def __init__(self, max_value: float = 2.0) -> None:
        self.max_value = float(max_value)

    def __call__(self, w):
        sigma = keras.ops.max(keras.ops.svd(w, compute_uv=False))
        return w * keras.ops.minimum(1.0, self.max_value / (sigma + 1e-12))

    def get_config(self) -> dict:
        return {"max_value": self.max_value}


def build_model(cfg: ModelConfig, n_features: int, masking: bool, learning_rate: float = 1e-3) -> keras.Model:
    """Build and compile the classifier.

    Args:
        cfg: architecture settings.
        n_features: F, features per timestep.
        masking: add Masking(mask_value=0.0) so right-padded rows are skipped.
        learning_rate: Adam learning rate.
    Returns:
        a compiled keras.Model, input (batch, time, F) float32 -> (batch, 1) probability.
    """
    inputs = keras.Input(shape=(None, n_features), name=INPUT_NAME)  # (batch, time, F): any length
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
            recurrent_constraint=SpectralNormCap(cfg.recurrent_norm_max) if cfg.recurrent_norm_max else None,
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
