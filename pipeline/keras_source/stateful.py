"""Keras recurrent layers called with state: ``stateful=True`` freed, ``initial_state`` inputs refused.

Owns: ``free_batch_size``, which turns a model with ``stateful=True`` recurrent layers (and so a fixed
batch size) into the same model with ``stateful=False`` and a free batch axis, weights copied; and
``initial_state_layers``, which names the recurrent layers a model calls with an ``initial_state``.
Layer: keras source. Imports: keras (lazily). Reads: the model's config and weights. Writes: nothing.

Why freeing is exact: an exported classifier scores each call from zero states, which is what the
stateful model computes right after ``reset_states()``; the copy is that model with the batch size
freed. Its state carried across calls is what ``Predictor.stream()`` offers instead.
"""

from __future__ import annotations

from typing import Any, Optional

from pipeline.errors import ExportError

__all__ = ["free_batch_size", "initial_state_layers"]


def initial_state_layers(model) -> list[str]:
    """Names of the layers ``model`` calls with an ``initial_state`` (a second input of the layer)."""
    names = []
    for layer in model.layers:
        if not hasattr(layer, "cell") and not hasattr(layer, "forward_layer"):
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            args = getattr(node, "arguments", None)
            if args is None:
                continue
            if args.kwargs.get("initial_state") is not None or len(args.args) > 1:
                names.append(f"{layer.name!r} (class {type(layer).__name__})")
                break
    return names


def _stateful_layers(model) -> list:
    found = []
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            found.append(layer)
        for inner in ("forward_layer", "backward_layer", "layer"):
            sub = getattr(layer, inner, None)
            if sub is not None and getattr(sub, "stateful", False) and layer not in found:
                found.append(layer)
    return found


def _freed(config: Any) -> Any:
    """``config`` with every ``stateful`` false and the batch dimension of every input shape None."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "stateful":
                out[key] = False
            elif key in ("batch_shape", "batch_input_shape") and isinstance(value, (list, tuple)) and value:
                out[key] = [None, *value[1:]]
            elif key == "batch_size":
                out[key] = None
            else:
                out[key] = _freed(value)
        return out
    if isinstance(config, list):
        return [_freed(v) for v in config]
    return config


def free_batch_size(model) -> tuple[Any, Optional[str]]:
    """(model, None) when no layer is stateful, else (a stateless copy, a note saying what changed).

    Raises:
        ExportError: the copy cannot be built (the note names the stateful layers and the Keras error).
    """
    stateful = _stateful_layers(model)
    if not stateful:
        return model, None
    import keras

    names = ", ".join(f"{layer.name!r}" for layer in stateful)
    batch = model.inputs[0].shape[0] if model.inputs else None
    try:
        blob = keras.saving.serialize_keras_object(model)
        copy = keras.saving.deserialize_keras_object(_freed(blob))
        copy.set_weights(model.get_weights())
    except Exception as exc:  # Keras raises many types from config round trips
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"stateful=True layer(s) {names}: could not free the fixed batch size {batch} to export "
                          f"them from zero states ({type(exc).__name__}: {detail})") from None
    note = (f"stateful=True layer(s) {names}: exported as stateful=False with the batch size {batch} freed, i.e. "
            "each call starts from zero states (the stateful model after reset_states()); carry state across calls "
            "with Predictor.stream()")
    return copy, note
