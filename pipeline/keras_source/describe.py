"""Describe a Keras classifier: is it one we export, what does it take, and its p(class 1).

Owns: the rules for which models are accepted (one input, one output, a binary head), the
probability-of-class-1 form of the head (``Dense(2, softmax)`` and logit heads become one
``Dense(1, sigmoid)`` on the same features), ``source_proba`` (the original head's numbers) and the
checks a sample must pass against the model's input.
Layer: keras source. Imports: numpy, keras (heavy side, lazily), pipeline.errors.
Reads/writes: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pipeline.errors import DataFormatError, InputError

__all__ = ["SourceModel", "ModelKindError", "describe", "check_sample", "source_proba"]


class ModelKindError(InputError):
    """The Keras model is not a binary classifier with one input and one output (exit 2)."""


@dataclass
class SourceModel:
    """What the exporter needs to know about a user's model.

    ``proba_model`` outputs p(class 1) as (batch, 1) through a final ``Dense(1, sigmoid)``; it shares
    every other layer (and its weights) with ``model``. ``head`` is how the original model ends.
    """

    model: Any
    proba_model: Any
    head: str                      # sigmoid | softmax2 | logit
    input_kind: str                # features (batch, time, F) float | tokens (batch, time) ids
    timesteps: Optional[int]       # fixed T, or None for a dynamic time axis
    features: Optional[int]        # F for feature inputs
    vocabulary_size: Optional[int]  # Embedding input_dim for token inputs
    masking: bool                  # a Masking layer or Embedding(mask_zero=True)
    mask_value: Optional[float]


def _activation(layer) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def describe(model, logits: bool = False) -> SourceModel:
    """Check ``model`` is an exportable binary classifier and describe it.

    Args:
        model: a Keras 3 Sequential or Functional model.
        logits: the model ends in ``Dense(1)`` with no activation, and that output is a logit.
    Raises:
        ModelKindError: several inputs or outputs, a multi-class or regression head, a head we
            cannot read as p(class 1), or an input that is neither (batch, time, F) nor (batch, time) ids.
    """
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelKindError(f"expected a model with one input and one output, got {len(model.inputs)} input(s) "
                             f"and {len(model.outputs)} output(s)")
    out_shape = tuple(model.outputs[0].shape)
    last = model.layers[-1]
    if len(out_shape) != 2 or out_shape[-1] not in (1, 2):
        raise ModelKindError(f"expected a binary classifier with output (batch, 1) or (batch, 2), got output shape "
                             f"{out_shape}: {max(out_shape[-1] or 0, 3)} or more classes, or a sequence/regression output, "
                             "cannot be exported as a binary classifier")
    if type(last).__name__ != "Dense":
        raise ModelKindError(f"expected the model to end in a Dense layer (the classifier head), got "
                             f"{type(last).__name__} {last.name!r}")
    act, units = _activation(last), int(last.units)
    if units == 1 and act == "sigmoid":
        head = "sigmoid"
    elif units == 2 and act == "softmax":
        head = "softmax2"
    elif units == 1 and act == "linear":
        if not logits:
            raise ModelKindError("the model ends in Dense(1) with no activation: that is a logit or a regression "
                                 "output; pass --logits if it is a logit of class 1")
        head = "logit"
    else:
        raise ModelKindError(f"expected a head Dense(1, sigmoid), Dense(2, softmax) or Dense(1) with --logits, got "
                             f"Dense({units}, {act}): not a binary classifier")

    in_shape = tuple(model.inputs[0].shape)
    dtype = str(model.inputs[0].dtype)
    embedding = next((layer for layer in model.layers if type(layer).__name__ == "Embedding"), None)
    masking_layer = next((layer for layer in model.layers if type(layer).__name__ == "Masking"), None)
    if len(in_shape) == 2 and embedding is not None:
        kind, T, F, vocab = "tokens", in_shape[1], None, int(embedding.input_dim)
    elif len(in_shape) == 3 and "float" in dtype:
        kind, T, F, vocab = "features", in_shape[1], in_shape[2], None
        if F is None:
            raise ModelKindError(f"expected a fixed feature axis, got input shape {in_shape}")
    else:
        raise ModelKindError(f"expected input (batch, time, features) float or (batch, time) token ids into an "
                             f"Embedding, got shape {in_shape} dtype {dtype}")
    kinds = [type(layer).__name__ for layer in model.layers]
    if masking_layer is not None and "Normalization" in kinds and kinds.index("Normalization") < kinds.index("Masking"):
        raise ModelKindError("Masking after Normalization masks steps whose raw values equal the normalization mean, "
                             "not right padding with zeros; expected Masking(0.0) before Normalization")
    masking = bool(masking_layer is not None or (embedding is not None and embedding.mask_zero))
    mask_value = float(masking_layer.mask_value) if masking_layer is not None else (0.0 if masking else None)
    if masking_layer is not None and mask_value != 0.0:
        raise ModelKindError(f"expected Masking(mask_value=0.0) (right-padded rows of zeros), got mask_value {mask_value}")

    proba_model = model
    if head != "sigmoid":
        kernel, *bias = last.get_weights()  # (D, units), (units,)
        b = bias[0] if bias else np.zeros(units, np.float32)
        if head == "softmax2":  # softmax(z)[1] == sigmoid(z1 - z0)
            w, c = kernel[:, 1] - kernel[:, 0], b[1] - b[0]
        else:
            w, c = kernel[:, 0], b[0]
        dense = keras.layers.Dense(1, activation="sigmoid", name="p_class1")
        if type(model).__name__ == "Sequential":  # stays a chain: the same layers, then the new head
            spec = model.inputs[0]
            proba_model = keras.Sequential([keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype)]
                                           + model.layers[:-1] + [dense], name=f"{model.name}_p_class1")
        else:
            proba_model = keras.Model(model.inputs, dense(last.input), name=f"{model.name}_p_class1")
        dense.set_weights([w[:, None].astype(np.float32), np.array([c], np.float32)])
    return SourceModel(model, proba_model, head, kind, T, F, vocab, masking, mask_value)


def source_proba(source: SourceModel, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """p(class 1) from the ORIGINAL model (its own head): (N, ...) -> (N,) float32."""
    out = []
    for start in range(0, len(X), batch_size):
        y = np.asarray(source.model(X[start:start + batch_size], training=False), dtype=np.float32)
        if source.head == "softmax2":
            p = y[:, 1]
        elif source.head == "logit":
            p = 1.0 / (1.0 + np.exp(-y[:, 0].astype(np.float64)))
        else:
            p = y[:, 0]
        out.append(np.asarray(p, np.float32))
    return np.concatenate(out)


def check_sample(source: SourceModel, X: np.ndarray, lengths: Optional[np.ndarray], where: str) -> np.ndarray:
    """Check sample inputs against the model's input; return X as float32 (features) or int64 (ids).

    Raises:
        DataFormatError: empty sample, wrong rank/shape/dtype, NaN/Inf, token ids outside the vocabulary.
    """
    X = np.asarray(X)
    if X.size == 0 or X.shape[0] == 0:
        raise DataFormatError(f"{where}: expected at least one sample, got shape {X.shape}")
    if source.input_kind == "tokens":
        if X.ndim == 3 and X.shape[2] == 1:
            X = X[:, :, 0]
        if X.ndim != 2:
            raise DataFormatError(f"{where}: expected token ids (samples, timesteps), got shape {X.shape}")
        if X.dtype.kind == "f":
            if not np.isfinite(X).all():
                raise DataFormatError(f"{where}: expected integer token ids, got NaN/Inf")
            if (X != np.round(X)).any():
                raise DataFormatError(f"{where}: expected integer token ids, got non-integer values (dtype {X.dtype})")
        elif X.dtype.kind not in "iu":
            raise DataFormatError(f"{where}: expected integer token ids, got dtype {X.dtype}")
        ids = X.astype(np.int64)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= source.vocabulary_size:
            raise DataFormatError(f"{where}: expected token ids in [0, {source.vocabulary_size - 1}] (the Embedding's "
                                  f"vocabulary), got ids in [{lo}, {hi}]")
        out = ids
    else:
        if X.ndim != 3:
            raise DataFormatError(f"{where}: expected (samples, timesteps, {source.features}) features, got shape {X.shape}")
        if X.shape[2] != source.features:
            raise DataFormatError(f"{where}: expected {source.features} features like the model's input, got {X.shape[2]}")
        if X.dtype.kind not in "iuf":
            raise DataFormatError(f"{where}: expected numeric features, got dtype {X.dtype}")
        out = X.astype(np.float32)
        real = np.ones(out.shape[:2], bool) if lengths is None else np.arange(out.shape[1])[None, :] < lengths[:, None]
        if not np.isfinite(out[real]).all():
            bad = np.argwhere(~np.isfinite(out) & real[:, :, None])[0]
            raise DataFormatError(f"{where}: expected finite features, got NaN/Inf (first at sample {bad[0]}, timestep "
                                  f"{bad[1]}, feature {bad[2]})")
    if source.timesteps is not None and out.shape[1] != source.timesteps:
        raise DataFormatError(f"{where}: expected {source.timesteps} timesteps like the model's input, got {out.shape[1]}")
    return out
