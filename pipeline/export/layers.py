"""Native emitters for the layers around the GRUs: normalization, activations, Dense per step,
convolutional front-ends, local pooling, padding/cropping, reshaping and merges (issue 27).

Owns: one function per Keras layer kind in ``EMITTERS`` (one input) and ``MERGE_EMITTERS`` (a list of
inputs: Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum). pipeline.export.native walks
the model and calls them. Layer: export. Imports: numpy, onnx, pipeline.export.activations,
pipeline.export.base. Reads: the layers' weights and settings. Writes: nothing (nodes into the builder).

Layouts (``_Tensor.layout``): "btf" (batch, time, features), "tbf" (time-major, after a GRU), "bf".
Sequence layers work on btf; a tbf input is transposed once. Masks pass through per-step layers
(normalizations, Dense, Activation); layers that move or mix steps (convolutions, pooling, padding,
merges) refuse a masked input, since Keras' mask handling there is not reproduced.

Formulas (Keras 3 inference):
    BatchNormalization  x * (gamma / sqrt(var + eps)) + (beta - mean * gamma / sqrt(var + eps)), axis -1
    LayerNormalization  (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (rms_scaling refused)
    Conv1D              ONNX Conv on (B, C, T): padding valid / same (Keras: extra pad at the end) /
                        causal (left pad dilation * (k - 1)); strides, dilation_rate, groups
    SeparableConv1D     depthwise Conv (group = C) then a 1x1 Conv;  DepthwiseConv1D: group = C
    MaxPooling1D / AveragePooling1D   MaxPool / AveragePool (same: count_include_pad=0, as Keras)
    UpSampling1D  repeat each step; ZeroPadding1D / Cropping1D  Pad / Slice over time
"""

from __future__ import annotations

import numpy as np

from pipeline.export.activations import activation_key, emit_activation
from pipeline.export.base import UnsupportedModelError, _int64, _Tensor

__all__ = ["EMITTERS", "MERGE_EMITTERS", "SEQUENCE_MIXERS"]

# Layers that read neighbouring steps or merge branches: no stream graph (it has no buffer of past steps).
SEQUENCE_MIXERS = ("Conv1D", "SeparableConv1D", "DepthwiseConv1D", "MaxPooling1D", "AveragePooling1D",
                   "UpSampling1D", "ZeroPadding1D", "Cropping1D", "Reshape", "Permute", "Concatenate", "Add",
                   "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Attention", "AdditiveAttention",
                   "MultiHeadAttention")


def _f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _btf(e, layer, t: _Tensor, what: str = "a (batch, time, features) sequence") -> str:
    """``t`` as (B, T, F); refuses masks and non-sequences."""
    if t.layout not in ("btf", "tbf"):
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: expected {what}")
    if t.mask_tb1 is not None:
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} on a masked sequence: Keras' mask "
                                    "handling there is not reproduced; put Masking after it or drop the mask")
    if t.layout == "tbf":
        return e.g.op1("Transpose", [t.name], "x_btf", perm=[1, 0, 2])
    return t.name


def _last_axis_only(layer, axis) -> None:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    ndim = len(layer.output.shape)  # same rank as the input (whose node may also list a mask)
    if sorted(a % ndim for a in axes) != [ndim - 1]:
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} with axis={axis}: expected the "
                                    "feature axis (-1)")


def _activation(e, layer, t: _Tensor) -> _Tensor:
    key = activation_key(layer.activation)
    out = emit_activation(e.g, key, t.name)
    if out is None:
        raise UnsupportedModelError(f"Activation layer {layer.name!r}: activation {key!r} has no ONNX form here")
    return _Tensor(out, t.layout, t.lengths, t.mask_tb1)


def _batch_norm(e, layer, t: _Tensor) -> _Tensor:
    _last_axis_only(layer, layer.axis)
    var = np.asarray(layer.moving_variance.numpy(), np.float64)
    inv = 1.0 / np.sqrt(var + float(layer.epsilon))
    if layer.scale:
        inv = inv * np.asarray(layer.gamma.numpy(), np.float64)
    shift = -np.asarray(layer.moving_mean.numpy(), np.float64) * inv
    if layer.center:
        shift = shift + np.asarray(layer.beta.numpy(), np.float64)
    g = e.g
    out = g.op1("Add", [g.op1("Mul", [t.name, g.const("bn_scale", _f32(inv))], "bn_mul"),
                        g.const("bn_shift", _f32(shift))], "bn")
    return _Tensor(out, t.layout, t.lengths, t.mask_tb1)


def _layer_norm(e, layer, t: _Tensor) -> _Tensor:
    _last_axis_only(layer, layer.axis)
    if getattr(layer, "rms_scaling", False):
        raise UnsupportedModelError(f"LayerNormalization layer {layer.name!r} with rms_scaling=True")
    g = e.g
    mean = g.op1("ReduceMean", [t.name], "ln_mean", axes=[-1], keepdims=1)
    centered = g.op1("Sub", [t.name, mean], "ln_centered")
    var = g.op1("ReduceMean", [g.op1("Mul", [centered, centered], "ln_sq")], "ln_var", axes=[-1], keepdims=1)
    std = g.op1("Sqrt", [g.op1("Add", [var, g.const("ln_eps", _f32(layer.epsilon))], "ln_var_eps")], "ln_std")
    out = g.op1("Div", [centered, std], "ln_norm")
    if layer.scale:
        out = g.op1("Mul", [out, g.const("ln_gamma", _f32(layer.gamma.numpy()))], "ln_scaled")
    if layer.center:
        out = g.op1("Add", [out, g.const("ln_beta", _f32(layer.beta.numpy()))], "ln")
    return _Tensor(out, t.layout, t.lengths, t.mask_tb1)


def _time_distributed(e, layer, t: _Tensor) -> _Tensor:
    from pipeline.export.native import LAYER_EMITTERS

    inner = layer.layer
    kind = type(inner).__name__
    if kind not in ("Dense", "Activation", "BatchNormalization", "LayerNormalization", "Dropout") or \
            t.layout not in ("btf", "tbf"):
        raise UnsupportedModelError(f"TimeDistributed layer {layer.name!r} of {kind}: supported for per-step Dense, "
                                    "Activation, BatchNormalization, LayerNormalization on a sequence")
    return LAYER_EMITTERS[kind](e, inner, t)


def _conv_pads(layer, k: int, dilation: int, stride: int) -> tuple[list[int], str]:
    padding = layer.padding
    span = dilation * (k - 1)
    if padding == "valid":
        return [0, 0], padding
    if padding == "causal":
        return [span, 0], padding
    if padding == "same":
        if stride != 1:  # total pad depends on T; ONNX's SAME_UPPER pads at the end like Keras/TF
            return [], "SAME_UPPER"
        return [span // 2, span - span // 2], padding
    raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: padding {padding!r}")


def _conv_node(e, x_bct: str, W: np.ndarray, b, layer, k: int, group: int, dilation: int, stride: int) -> str:
    g = e.g
    pads, mode = _conv_pads(layer, k, dilation, stride)
    attrs = {"kernel_shape": [k], "strides": [stride], "dilations": [dilation], "group": group}
    if mode == "SAME_UPPER":
        attrs["auto_pad"] = "SAME_UPPER"
    else:
        attrs["pads"] = pads
    ins = [x_bct, g.const("conv_W", _f32(W))]
    if b is not None:
        ins.append(g.const("conv_b", _f32(b)))
    return g.op1("Conv", ins, "conv", **attrs)


def _check_conv(layer) -> tuple[int, int, int]:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: expected channels_last")
    k, stride, dilation = int(layer.kernel_size[0]), int(layer.strides[0]), int(layer.dilation_rate[0])
    if stride > 1 and dilation > 1:
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: strides and dilation together")
    return k, stride, dilation


def _finish_conv(e, layer, y_bct: str) -> _Tensor:
    g = e.g
    y = g.op1("Transpose", [y_bct], "conv_btf", perm=[0, 2, 1])  # (B, T', C')
    key = activation_key(layer.activation)
    out = emit_activation(g, key, y)
    if out is None:
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: activation {key!r}")
    return _Tensor(out, "btf")


def _conv1d(e, layer, t: _Tensor) -> _Tensor:
    k, stride, dilation = _check_conv(layer)
    x = e.g.op1("Transpose", [_btf(e, layer, t)], "x_bct", perm=[0, 2, 1])  # (B, C, T)
    W = np.asarray(layer.kernel.numpy()).transpose(2, 1, 0)  # (k, C/g, O) -> (O, C/g, k)
    b = layer.bias.numpy() if layer.use_bias else None
    return _finish_conv(e, layer, _conv_node(e, x, W, b, layer, k, int(layer.groups), dilation, stride))


def _depthwise(e, layer, t: _Tensor, separable: bool) -> _Tensor:
    k, stride, dilation = _check_conv(layer)
    x = e.g.op1("Transpose", [_btf(e, layer, t)], "x_bct", perm=[0, 2, 1])  # (B, C, T)
    kernel = layer.depthwise_kernel if separable else layer.kernel  # Keras 3 names
    dk = np.asarray(kernel.numpy())  # (k, C, m)
    C, m = dk.shape[1], dk.shape[2]
    W = dk.transpose(1, 2, 0).reshape(C * m, 1, k)  # output channel c*m + j reads input channel c
    if separable:
        y = _conv_node(e, x, W, None, layer, k, C, dilation, stride)
        pk = np.asarray(layer.pointwise_kernel.numpy())  # (1, C*m, O)
        b = layer.bias.numpy() if layer.use_bias else None
        ins = [y, e.g.const("pw_W", _f32(pk.transpose(2, 1, 0)))] + ([e.g.const("pw_b", _f32(b))] if b is not None else [])
        y = e.g.op1("Conv", ins, "pointwise", kernel_shape=[1])
    else:
        b = layer.bias.numpy() if layer.use_bias else None
        y = _conv_node(e, x, W, b, layer, k, C, dilation, stride)
    return _finish_conv(e, layer, y)


def _pool1d(e, layer, t: _Tensor) -> _Tensor:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: expected channels_last")
    g = e.g
    k, stride = int(layer.pool_size[0]), int(layer.strides[0])
    x = g.op1("Transpose", [_btf(e, layer, t)], "x_bct", perm=[0, 2, 1])
    attrs = {"kernel_shape": [k], "strides": [stride]}
    attrs["auto_pad"] = "SAME_UPPER" if layer.padding == "same" else "VALID"
    if type(layer).__name__ == "MaxPooling1D":
        y = g.op1("MaxPool", [x], "maxpool", **attrs)
    else:
        y = g.op1("AveragePool", [x], "avgpool", count_include_pad=0, **attrs)
    return _Tensor(g.op1("Transpose", [y], "pool_btf", perm=[0, 2, 1]), "btf")


def _upsampling(e, layer, t: _Tensor) -> _Tensor:
    g = e.g
    x = _btf(e, layer, t)
    size = int(layer.size)
    # (B, T, F) -> (B, T, 1, F) -> tile (1, 1, s, 1) -> (B, T*s, F)
    x4 = g.op1("Unsqueeze", [x, g.const("axis2", _int64(2))], "up4")
    tiled = g.op1("Tile", [x4, g.const("reps", _int64(1, 1, size, 1))], "tiled")
    shape = g.op1("Concat", [g.op1("Slice", [g.op1("Shape", [x], "shape"), g.const("s0", _int64(0)),
                                             g.const("s1", _int64(1))], "b"),
                             g.const("rest", _int64(-1, int(layer.output.shape[-1])))], "up_shape", axis=0)
    return _Tensor(g.op1("Reshape", [tiled, shape], "upsampled"), "btf")


def _zero_padding(e, layer, t: _Tensor) -> _Tensor:
    g = e.g
    a, b = (int(v) for v in layer.padding)
    pads = g.const("pads", _int64(0, a, 0, 0, b, 0))
    return _Tensor(g.op1("Pad", [_btf(e, layer, t), pads], "padded"), "btf")


def _cropping(e, layer, t: _Tensor) -> _Tensor:
    g = e.g
    a, b = (int(v) for v in layer.cropping)
    end = -b if b else np.iinfo(np.int64).max
    out = g.op1("Slice", [_btf(e, layer, t), g.const("start", _int64(a)), g.const("end", _int64(end)),
                          g.const("axes", _int64(1))], "cropped")
    return _Tensor(out, "btf")


def _merge_inputs(e, layer, ts: list) -> list[str]:
    if any(t.mask_tb1 is not None for t in ts):
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} of masked tensors")
    layouts = {t.layout for t in ts}
    if layouts <= {"bf"}:
        return [t.name for t in ts]
    if not layouts <= {"btf", "tbf"}:
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} of a sequence and a vector")
    return [_btf(e, layer, t) if t.layout == "tbf" else t.name for t in ts]


def _merge(e, layer, ts: list) -> _Tensor:
    names = _merge_inputs(e, layer, ts)
    layout = "bf" if ts[0].layout == "bf" else "btf"
    g, kind = e.g, type(layer).__name__
    if kind == "Concatenate":
        ndim = len(layer.output.shape)
        if int(layer.axis) % ndim != ndim - 1:
            raise UnsupportedModelError(f"Concatenate layer {layer.name!r} with axis={layer.axis}: expected the "
                                        "feature axis (-1)")
        return _Tensor(g.op1("Concat", names, "concat", axis=-1), layout)
    op = {"Add": "Sum", "Maximum": "Max", "Minimum": "Min", "Average": "Mean"}.get(kind)
    if op:
        return _Tensor(g.op1(op, names, kind.lower()), layout)
    if kind == "Subtract":
        return _Tensor(g.op1("Sub", names, "sub"), layout)
    out = names[0]
    for other in names[1:]:  # Multiply
        out = g.op1("Mul", [out, other], "mul")
    return _Tensor(out, layout)


def _reshape_like(e, layer, t: _Tensor) -> _Tensor:
    """Reshape / Permute / Flatten that leave (batch, features) or (batch, time, features) as they were.

    Permute((2, 1)) swaps time and features, so the GRU after it would read features as steps: refused."""
    source = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input  # a node may list a mask
    out_shape, in_shape = tuple(layer.output.shape), tuple(source.shape)
    kind = type(layer).__name__
    if kind == "Flatten" and len(in_shape) == 2:
        return t
    if kind == "Permute" and tuple(layer.dims) == (1, 2):
        return t
    if kind == "Reshape" and len(in_shape) == 3 and len(out_shape) == 3 and in_shape[-1] == out_shape[-1] and \
            in_shape[1] == out_shape[1]:
        return t
    raise UnsupportedModelError(f"{kind} layer {layer.name!r} from {in_shape} to {out_shape}: only reshapes that keep "
                                "the time axis and features in place are supported")


EMITTERS = {
    "Activation": _activation,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "TimeDistributed": _time_distributed,
    "Conv1D": _conv1d,
    "SeparableConv1D": lambda e, layer, t: _depthwise(e, layer, t, True),
    "DepthwiseConv1D": lambda e, layer, t: _depthwise(e, layer, t, False),
    "MaxPooling1D": _pool1d,
    "AveragePooling1D": _pool1d,
    "UpSampling1D": _upsampling,
    "ZeroPadding1D": _zero_padding,
    "Cropping1D": _cropping,
    "Reshape": _reshape_like,
    "Flatten": _reshape_like,
    "Permute": _reshape_like,
}
MERGE_EMITTERS = {kind: _merge for kind in ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
                                            "Minimum")}
