"""Run a Keras model: batched float32 inference, a float64 copy, and chunk-by-chunk streaming.

Owns: ``keras_proba`` (the probabilities verification compares against), ``float64_copy`` (the
same architecture and weights in float64, used to explain a failed check) and ``KerasChunkRunner``
(the classifier's own layers run chunk by chunk, each GRU with ``initial_state``/``return_state``,
the average head as a carried running mean and count: the reference of stream.onnx).
Layer: keras source. Imports: numpy; keras lazily. Reads/writes: nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["keras_proba", "float64_copy", "float64_proba", "padding_value", "pad_past_lengths", "KerasChunkRunner"]

_IDENTITY_AT_INFERENCE = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                          "ActivityRegularization"}


def padding_value(model):
    """What the model's own masking reads as padding: its Masking layer's mask value, 0 for an
    ``Embedding(mask_zero=True)``, None when the model does not mask."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Masking":
            return float(layer.mask_value)
        if kind == "Embedding" and layer.mask_zero:
            return 0
    return None


def pad_past_lengths(model, X: np.ndarray, lengths) -> np.ndarray:
    """X with every step past its row's length set to the model's padding value (X itself when
    ``lengths`` is None or the model does not mask): how Keras is fed a right-padded batch."""
    value = padding_value(model)
    if lengths is None or value is None:
        return X
    real = np.arange(X.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (N, T)
    real = real.reshape(real.shape + (1,) * (X.ndim - 2))
    return np.where(real, X, np.asarray(value, X.dtype))


def _squeeze_binary(y: np.ndarray) -> np.ndarray:
    """(N, 1) p(class 1) -> (N,); (N, k) stays."""
    return y.reshape(-1) if y.shape[-1] == 1 else y


def keras_proba(model, X: np.ndarray, lengths=None, batch_size: int = 1024) -> np.ndarray:
    """The model's probabilities in inference mode, float32: (N,) p(class 1) for one output unit, (N, k) for k.

    X: (N, T, F) (or (N, T) ids) as the model takes them; ``lengths`` (N,) or None: steps past each
    length get the model's padding value first (``pad_past_lengths``).
    """
    X = pad_past_lengths(model, X, lengths)
    out = []
    for start in range(0, len(X), batch_size):
        out.append(_squeeze_binary(np.asarray(model(X[start:start + batch_size], training=False))))
    return np.concatenate(out).astype(np.float32)


def float64_copy(model):
    """The same architecture and weights computed in float64: a near-exact reference.

    Used to tell, when Keras and ONNX disagree, whether float32 itself is ill-conditioned on an
    input (both sides far from the float64 result) or one side is wrong.
    """
    config = model.get_config()

    def to_f64(node):
        if isinstance(node, list):
            return [to_f64(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "dtype" and isinstance(value, dict):  # a serialized DTypePolicy
                out[key] = {**value, "config": {**value.get("config", {}), "name": "float64"}}
            elif key == "dtype" and isinstance(value, str) and "float" in value:
                out[key] = "float64"
            else:
                out[key] = to_f64(value)
        return out

    copy = model.__class__.from_config(to_f64(config))
    copy.set_weights([np.asarray(w, dtype=np.float64) for w in model.get_weights()])
    return copy


def float64_proba(model):
    """A function (scaled Z, lengths) -> float64 probabilities ((N,) or (N, k)); the float64 copy is built on first use."""
    built: list = []

    def proba(Z: np.ndarray, lengths=None) -> np.ndarray:
        if not built:
            built.append(float64_copy(model))
        copy = built[0]
        Z = pad_past_lengths(model, Z, lengths)
        return np.concatenate([_squeeze_binary(np.asarray(copy(Z[s:s + 1024].astype(np.float64), training=False)))
                               for s in range(0, len(Z), 1024)])

    return proba


class KerasChunkRunner:
    """A streamable classifier run by Keras chunk by chunk: ``runner(x_chunk, states) -> (proba, new_states)``.

    x_chunk: scaled (B, T_chunk, F) float32; states: list of arrays in stream.onnx's order: (B, H) per GRU
    layer, then the average head's running mean (B, H) and step count (B, 1).
    Each GRU is rebuilt with ``return_state=True`` and called with ``initial_state``; same weights.
    """

    def __init__(self, model) -> None:
        import keras

        self._steps: list[tuple[str, Any]] = []
        self.state_widths: list[int] = []  # in graph order: GRU states, then the average's mean and count
        for layer in model.layers:
            kind = type(layer).__name__
            if kind in ("InputLayer", "Masking") or kind in _IDENTITY_AT_INFERENCE:
                # Masking: stream chunks are never padded and real steps never equal the mask value
                # (the runtime refuses them), so the mask is all-true.
                continue
            if kind == "GRU":
                config = dict(layer.get_config(), return_state=True, name=f"{layer.name}_stepwise",
                              dropout=0.0, recurrent_dropout=0.0)
                stepwise = keras.layers.GRU.from_config(config)
                stepwise.build((None, None, int(layer.cell.kernel.shape[0])))
                stepwise.set_weights(layer.get_weights())
                self._steps.append(("gru", stepwise))
                self.state_widths.append(int(layer.units))
            elif kind == "GlobalAveragePooling1D":
                # Running mean and step count carried across chunks, like stream.onnx's avg_mean/avg_count.
                self._steps.append(("avg", None))
                self.state_widths += [int(layer.output.shape[-1]), 1]
            elif kind in ("Dense", "Embedding", "Normalization", "Activation", "BatchNormalization",
                          "LayerNormalization", "TimeDistributed"):  # no state across time steps
                self._steps.append(("layer", layer))
            else:
                raise ValueError(f"layer {layer.name!r} of type {kind} cannot be run chunk by chunk")

    def __call__(self, x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        h = x
        new_states, i = [], 0
        for kind, layer in self._steps:
            if kind == "gru":
                out = layer(h, initial_state=[states[i]], training=False)
                h, s = out[0], out[1]
                new_states.append(np.asarray(s, dtype=np.float32))
                i += 1
            elif kind == "avg":
                seq = np.asarray(h, dtype=np.float32)  # (B, T_chunk, H)
                count = states[i + 1] + np.float32(seq.shape[1])  # (B, 1)
                h = (states[i] * states[i + 1] + seq.sum(axis=1, dtype=np.float32)) / count  # (B, H) mean so far
                new_states += [h, count]
                i += 2
            else:
                h = layer(h, training=False)
        return _squeeze_binary(np.asarray(h, dtype=np.float32)), new_states

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, h), np.float32) for h in self.state_widths]
