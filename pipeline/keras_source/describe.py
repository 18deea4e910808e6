"""Describe a Keras classifier: is it one we export, what does it take, and its p(class 1).

Owns: the rules for which models are accepted (one input, one output, a classifier head: binary,
multi-class or multi-label), the probability form of the head (a binary ``Dense(2, softmax)`` or
logit head becomes one ``Dense(1, sigmoid)`` on the same features; a k-way logit head becomes
``Dense(k, softmax)``), ``source_proba`` (the original head's numbers) and the checks a sample must
pass against the model's input. The task rules are docs/artifact.md's.
Layer: keras source. Imports: numpy, keras (heavy side, lazily), pipeline.errors.
Reads/writes: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pipeline.errors import DataFormatError, InputError
from pipeline.keras_source.run import pad_past_lengths

__all__ = ["SourceModel", "ModelKindError", "describe", "check_sample", "source_proba"]


class ModelKindError(InputError):
    """The Keras model is not a classifier with one input and one output we can export (exit 2)."""


@dataclass
class SourceModel:
    """What the exporter needs to know about a user's model.

    ``proba_model`` outputs the artifact's probabilities: p(class 1) as (batch, 1) through a final
    ``Dense(1, sigmoid)`` for a binary task, (batch, k) for the others; it shares every other layer
    (and its weights) with ``model``. ``head`` is how the original model ends.
    """

    model: Any
    proba_model: Any
    head: str                      # sigmoid | softmax2 | logit | logit2 (binary); softmax | logits; multilabel
    task: str                      # binary | multiclass | multilabel
    n_classes: int                 # 2 for binary, k otherwise
    input_kind: str                # features (batch, time, F) float | tokens (batch, time) ids
    timesteps: Optional[int]       # fixed T, or None for a dynamic time axis
    features: Optional[int]        # F for feature inputs
    vocabulary_size: Optional[int]  # Embedding input_dim for token inputs
    masking: bool                  # a Masking layer or Embedding(mask_zero=True)
    mask_value: Optional[float]


def _activation(layer) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def _head(units: int, act: str, logits: bool) -> tuple[str, str]:
    """How the model's last Dense layer reads as a classifier head: (head, task), or ModelKindError."""
    if units == 1 and act == "sigmoid":
        return "sigmoid", "binary"
    if units == 2 and act == "softmax":
        return "softmax2", "binary"
    if units >= 3 and act == "softmax":
        return "softmax", "multiclass"
    if units >= 2 and act == "sigmoid":
        return "multilabel", "multilabel"
    if act == "linear":
        if not logits:
            raise ModelKindError(f"the model ends in Dense({units}) with no activation: that is a logit or a regression "
                                 "output; pass --logits if it gives class logits")
        return ("logit", "binary") if units == 1 else ("logit2", "binary") if units == 2 else ("logits", "multiclass")
    raise ModelKindError(f"expected a classifier head Dense(1, sigmoid), Dense(k, softmax), Dense(k, sigmoid) "
                         f"(multi-label) or Dense(k) with --logits, got Dense({units}, {act})")


def _proba_model(model, last, head: str, units: int):
    """``model`` with its head in the artifact's probability form (docs/artifact.md), sharing every other layer."""
    import keras

    if head in ("sigmoid", "softmax", "multilabel"):
        return model
    kernel, *bias = last.get_weights()  # (D, units), (units,)
    b = bias[0] if bias else np.zeros(units, np.float32)
    if head == "logits":  # k logits -> the same Dense with a softmax: the probabilities the logits stand for
        w, c, dense = kernel, b, keras.layers.Dense(units, activation="softmax", name="probabilities")
    else:
        if head in ("softmax2", "logit2"):  # softmax(z)[1] == sigmoid(z1 - z0)
            w, c = kernel[:, 1:2] - kernel[:, 0:1], b[1:2] - b[0:1]
        else:
            w, c = kernel[:, 0:1], b[0:1]
        dense = keras.layers.Dense(1, activation="sigmoid", name="p_class1")
    if type(model).__name__ == "Sequential":  # stays a chain: the same layers, then the new head
        spec = model.inputs[0]
        proba = keras.Sequential([keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype)]
                                 + model.layers[:-1] + [dense], name=f"{model.name}_proba")
    else:
        proba = keras.Model(model.inputs, dense(last.input), name=f"{model.name}_proba")
    dense.set_weights([np.asarray(w, np.float32), np.asarray(c, np.float32)])
    return proba


def describe(model, logits: bool = False) -> SourceModel:
    """Check ``model`` is an exportable classifier and describe it.

    Args:
        model: a Keras 3 Sequential or Functional model.
        logits: the model ends in ``Dense(k)`` with no activation, and that output holds class logits
            (k = 1: the logit of class 1).
    Raises:
        ModelKindError: several inputs or outputs, a regression or sequence output, a head we cannot
            read as class probabilities, or an input that is neither (batch, time, F) nor (batch, time) ids.
    """
    from pipeline.keras_source.stateful import initial_state_layers

    with_state = initial_state_layers(model)
    if with_state:
        raise ModelKindError(f"layer {', '.join(with_state)} takes an initial_state input: not supported (the exported "
                             "graph has one input, the sequence, and every row starts from zero states); build the "
                             "model without initial_state, or use Predictor.stream() set_state for a known start state")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelKindError(f"expected a model with one input and one output, got {len(model.inputs)} input(s) "
                             f"and {len(model.outputs)} output(s)")
    out_shape = tuple(model.outputs[0].shape)
    last = model.layers[-1]
    if len(out_shape) != 2 or not out_shape[-1]:
        raise ModelKindError(f"expected a classifier with output (batch, k), got output shape {out_shape}: a "
                             "sequence or regression output cannot be exported as a classifier")
    if type(last).__name__ != "Dense":
        raise ModelKindError(f"expected the model to end in a Dense layer (the classifier head), got "
                             f"{type(last).__name__} {last.name!r}")
    units = int(last.units)
    head, task = _head(units, _activation(last), logits)

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
                             "not right padding; expected the Masking layer before Normalization")
    masking = bool(masking_layer is not None or (embedding is not None and embedding.mask_zero))
    mask_value = float(masking_layer.mask_value) if masking_layer is not None else (0.0 if masking else None)

    n_classes = 2 if task == "binary" else units
    return SourceModel(model, _proba_model(model, last, head, units), head, task, n_classes, kind, T, F, vocab,
                       masking, mask_value)


def source_proba(source: SourceModel, X: np.ndarray, lengths: Optional[np.ndarray] = None,
                 batch_size: int = 1024) -> np.ndarray:
    """The ORIGINAL model's probabilities (its own head): (N, ...) -> (N,) p(class 1) for a binary task,
    (N, k) otherwise; float32. Logits become probabilities in float64 (sigmoid, or a stable softmax).
    ``lengths``: steps past each row's length get the model's padding value first."""
    X = pad_past_lengths(source.model, X, lengths)
    out = []
    for start in range(0, len(X), batch_size):
        y = np.asarray(source.model(X[start:start + batch_size], training=False), dtype=np.float32)
        z = y.astype(np.float64)
        if source.head == "softmax2":
            p = y[:, 1]
        elif source.head == "logit":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        elif source.head == "logit2":  # softmax(z)[1]
            p = 1.0 / (1.0 + np.exp(-(z[:, 1] - z[:, 0])))
        elif source.head == "logits":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
        elif source.task == "binary":
            p = y[:, 0]
        else:
            p = y
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
