"""The Keras side of every comparison: batched float32 inference and a float64 copy of a model.

Owns: ``keras_proba`` (the probabilities verification compares against) and ``float64_copy``
(the same architecture and weights in float64, used to explain a failed check).
Imports: numpy; keras only through the model objects it is given (and ``keras`` lazily).
Reads/writes: nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["keras_proba", "float64_copy", "float64_proba"]


def keras_proba(model, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities of class 1 from Keras in inference mode: (N, T, F) -> (N,) float32."""
    out = []
    for start in range(0, len(X), batch_size):
        out.append(np.asarray(model(X[start:start + batch_size], training=False)).reshape(-1))
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
    """A function scaled (N, T, F) -> (N,) float64 probabilities; the float64 copy is built on first use."""
    built: list = []

    def proba(Z: np.ndarray) -> np.ndarray:
        if not built:
            built.append(float64_copy(model))
        copy = built[0]
        return np.concatenate([np.asarray(copy(Z[s:s + 1024].astype(np.float64), training=False)).reshape(-1)
                               for s in range(0, len(Z), 1024)])

    return proba
