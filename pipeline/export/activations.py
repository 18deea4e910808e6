"""Keras activation functions as ONNX nodes: one table for Dense heads, Activation layers and per-step GRUs.

Owns: naming a Keras activation (``activation_key``: the Keras name, ``gelu`` exact or ``gelu_tanh``
for the tanh approximation), the ONNX GRU op's own activations that equal a Keras one exactly
(``RNN_ACTIVATIONS``), and ``emit_activation``, which writes any supported activation as opset-13..17
nodes. Layer: export. Imports: numpy, pipeline.export.graph. Reads/writes: nothing.

Formulas (Keras 3, keras/src/activations and the TF backend's ops):
    gelu (Keras' default, exact)  0.5 x (1 + erf(x / sqrt 2))   TensorFlow computes 0.5 x erfc(-x / sqrt 2);
                                   ONNX has no Erfc (tf2onnx's graph fails there); Erf exists since opset 9
    gelu_tanh (keras.ops.gelu)     0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
    selu                           Selu(alpha=1.6732632423543772, gamma=1.0507009873554805)
    hard_sigmoid                   relu6(x + 3) / 6 = HardSigmoid(alpha=1/6, beta=0.5)
    hard_silu / hard_swish         x * hard_sigmoid(x)
    silu / swish                   x * sigmoid(x);  mish  x * tanh(softplus(x))
    leaky_relu                     LeakyRelu(alpha=0.2) (Keras' default negative_slope)
    relu6 / hard_tanh / sparse_sigmoid   Clip(0, 6) / Clip(-1, 1) / Clip(0.5 x + 0.5, 0, 1)
    celu, elu (alpha 1), softplus, softsign, exponential, tanh_shrink, log_sigmoid, squareplus (b=4),
    sparse_plus, soft_shrink / hard_shrink (threshold 0.5), softmax / log_softmax (last axis)
Not expressible elementwise (refused by the callers): glu (halves the axis), sparsemax, threshold
(needs arguments), any other callable.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np

from pipeline.export.graph import GraphBuilder

__all__ = ["activation_key", "emit_activation", "RNN_ACTIVATIONS", "SUPPORTED"]

# Keras activation key -> (ONNX GRU activation, alpha, beta): the op's list where it equals Keras exactly.
RNN_ACTIVATIONS: dict[str, tuple[str, Optional[float], Optional[float]]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
    "linear": ("Affine", 1.0, 0.0),
}

_SELU_ALPHA, _SELU_SCALE = 1.67326324235437728481, 1.05070098735548049342
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def activation_key(fn) -> str:
    """The key of a Keras activation: its name, ``gelu`` for the exact form and ``gelu_tanh`` for the approximation."""
    approximate = None
    if isinstance(fn, functools.partial):
        approximate = fn.keywords.get("approximate")
        fn = fn.func
    name = getattr(fn, "__name__", str(fn))
    name = _ALIASES.get(name, name)
    if name == "gelu":
        if approximate is None:
            import keras  # keras.ops.gelu defaults to the tanh form, keras.activations.gelu to the exact one

            approximate = fn is keras.ops.gelu or fn is getattr(keras.ops.nn, "gelu", None)
        return "gelu_tanh" if approximate else "gelu"
    return name


def _f(g: GraphBuilder, hint: str, value: float) -> str:
    return g.const(hint, np.array(value, dtype=np.float32))


def emit_activation(g: GraphBuilder, key: str, x: str, hint: Optional[str] = None) -> Optional[str]:
    """Nodes computing Keras activation ``key`` of ``x`` (any shape; softmax over the last axis).

    Returns the output name, ``x`` itself for ``linear``, or None when ``key`` is not supported.
    """
    h = hint or key
    single = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softplus": "Softplus", "softsign": "Softsign",
              "exponential": "Exp"}
    if key == "linear":
        return x
    if key in single:
        return g.op1(single[key], [x], h)
    if key in ("softmax", "log_softmax"):
        return g.op1("Softmax" if key == "softmax" else "LogSoftmax", [x], h, axis=-1)
    if key == "elu":
        return g.op1("Elu", [x], h, alpha=1.0)
    if key == "celu":
        return g.op1("Celu", [x], h, alpha=1.0)
    if key == "selu":
        return g.op1("Selu", [x], h, alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if key == "leaky_relu":
        return g.op1("LeakyRelu", [x], h, alpha=0.2)
    if key == "hard_sigmoid":
        return g.op1("HardSigmoid", [x], h, alpha=1.0 / 6.0, beta=0.5)
    if key == "hard_silu":
        return g.op1("Mul", [x, g.op1("HardSigmoid", [x], "hsig", alpha=1.0 / 6.0, beta=0.5)], h)
    if key == "silu":
        return g.op1("Mul", [x, g.op1("Sigmoid", [x], "sig")], h)
    if key == "mish":
        return g.op1("Mul", [x, g.op1("Tanh", [g.op1("Softplus", [x], "sp")], "tsp")], h)
    if key in ("relu6", "hard_tanh"):
        lo, hi = (0.0, 6.0) if key == "relu6" else (-1.0, 1.0)
        return g.op1("Clip", [x, _f(g, "lo", lo), _f(g, "hi", hi)], h)
    if key == "sparse_sigmoid":
        half = _f(g, "half", 0.5)
        return g.op1("Clip", [g.op1("Add", [g.op1("Mul", [x, half], "hx"), half], "hx1"), _f(g, "lo", 0.0),
                              _f(g, "hi", 1.0)], h)
    if key == "tanh_shrink":
        return g.op1("Sub", [x, g.op1("Tanh", [x], "t")], h)
    if key == "log_sigmoid":
        return g.op1("Neg", [g.op1("Softplus", [g.op1("Neg", [x], "nx")], "sp")], h)
    if key == "soft_shrink":
        return g.op1("Shrink", [x], h, lambd=0.5, bias=0.5)
    if key == "hard_shrink":
        return g.op1("Shrink", [x], h, lambd=0.5, bias=0.0)
    if key == "squareplus":  # (x + sqrt(x^2 + 4)) / 2
        root = g.op1("Sqrt", [g.op1("Add", [g.op1("Mul", [x, x], "x2"), _f(g, "b", 4.0)], "x2b")], "root")
        return g.op1("Div", [g.op1("Add", [x, root], "xr"), _f(g, "two", 2.0)], h)
    if key == "sparse_plus":  # 0 (x <= -1), (x + 1)^2 / 4 (-1 < x < 1), x (x >= 1)
        one = _f(g, "one", 1.0)
        x1 = g.op1("Add", [x, one], "x1")
        quad = g.op1("Mul", [g.op1("Mul", [x1, x1], "x1sq"), _f(g, "quarter", 0.25)], "quad")
        mid = g.op1("Where", [g.op1("LessOrEqual", [x, _f(g, "m1", -1.0)], "le"), _f(g, "zero", 0.0), quad], "mid")
        return g.op1("Where", [g.op1("GreaterOrEqual", [x, one], "ge"), x, mid], h)
    if key == "gelu":  # 0.5 x (1 + erf(x / sqrt 2))
        erf = g.op1("Erf", [g.op1("Mul", [x, _f(g, "inv_sqrt2", 1.0 / math.sqrt(2.0))], "xs")], "erf")
        return g.op1("Mul", [g.op1("Mul", [x, _f(g, "half", 0.5)], "hx"), g.op1("Add", [erf, _f(g, "one", 1.0)],
                                                                                 "erf1")], h)
    if key == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.op1("Mul", [g.op1("Mul", [x, x], "x2"), x], "x3")
        inner = g.op1("Add", [x, g.op1("Mul", [x3, _f(g, "c", 0.044715)], "cx3")], "inner")
        t = g.op1("Tanh", [g.op1("Mul", [inner, _f(g, "k", math.sqrt(2.0 / math.pi))], "kin")], "t")
        return g.op1("Mul", [g.op1("Mul", [x, _f(g, "half", 0.5)], "hx"), g.op1("Add", [t, _f(g, "one", 1.0)], "t1")], h)
    return None


SUPPORTED = ("relu", "tanh", "sigmoid", "softplus", "softsign", "exponential", "softmax", "log_softmax", "elu", "celu",
             "selu", "leaky_relu", "hard_sigmoid", "hard_silu", "silu", "mish", "relu6", "hard_tanh", "sparse_sigmoid",
             "tanh_shrink", "log_sigmoid", "soft_shrink", "hard_shrink", "squareplus", "sparse_plus", "gelu",
             "gelu_tanh", "linear")
