"""Native emitters for attention over a sequence: ``Attention``, ``AdditiveAttention``, ``MultiHeadAttention``.

Owns: ``ATTENTION_EMITTERS`` (Keras class name -> function of the layer's call arguments), used by
pipeline.export.native's graph walk for attention pooling over GRU outputs (the sequence as query, key
and value, then a pooling layer). Layer: export. Imports: numpy, pipeline.export.base,
pipeline.export.layers (the (B, T, F) view of a tensor). Reads: the layers' weights. Writes: nothing.

Formulas (Keras 3 inference, keras/src/layers/attention):
    Attention dot        scores = q k^T (* scale if use_scale)
    Attention concat     scores = concat_score_weight * sum(tanh(scale? * (q_i + k_j)), -1)
    AdditiveAttention    scores = sum(scale? * tanh(q_i + k_j), -1)   (scale: a (dim,) weight if use_scale)
    MultiHeadAttention   q, k, v = x W + b per head (EinsumDense); scores = (q / sqrt(key_dim)) k^T;
                         out = concat_heads(softmax(scores) v) W_o + b_o
    then weights = softmax(scores over keys) and out = weights v; ``use_causal_mask=True`` subtracts 1e9 from
    the scores of later keys, as Keras does. Refused: masks (Keras' query/value masks are not reproduced),
    return_attention_scores, MultiHeadAttention with attention_axes, gates or sliding windows.
"""

from __future__ import annotations

import numpy as np

from pipeline.export.base import UnsupportedModelError, _int64, _Tensor
from pipeline.export.layers import _btf

__all__ = ["ATTENTION_EMITTERS"]


def _f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _check_call(layer, kwargs: dict, tensors: list) -> bool:
    """The call's use_causal_mask, after refusing what is not reproduced."""
    if kwargs.get("return_attention_scores"):
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} with return_attention_scores=True")
    for key in ("mask", "query_mask", "value_mask", "key_mask", "attention_mask"):
        if kwargs.get(key) is not None:
            raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} called with {key}")
    if any(t.mask_tb1 is not None for t in tensors):
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r} over a masked sequence: Keras' "
                                    "query/value masks are not reproduced")
    return bool(kwargs.get("use_causal_mask", False))


def _softmax_apply(g, scores: str, v: str, causal: bool) -> str:
    """softmax(scores, keys axis) @ v, with Keras' causal mask (scores - 1e9 above the diagonal)."""
    if causal:
        steps = g.op1("Gather", [g.op1("Shape", [scores], "s_shape"), g.const("last", np.array(-1, np.int64))],
                      "steps", axis=0)
        idx = g.op1("Range", [g.const("zero", np.array(0, np.int64)), steps, g.const("one", np.array(1, np.int64))],
                    "idx")
        rows = g.op1("Unsqueeze", [idx, g.const("ax1", _int64(1))], "rows")  # (T, 1)
        allowed = g.op1("Not", [g.op1("Less", [rows, idx], "later")], "allowed")  # (T, T): key j <= query i
        lowered = g.op1("Sub", [scores, g.const("big", np.array(1e9, np.float32))], "lowered")
        scores = g.op1("Where", [allowed, scores, lowered], "causal_scores")
    weights = g.op1("Softmax", [scores], "att_weights", axis=-1)
    return g.op1("MatMul", [weights, v], "att_out")


def _qvk(e, layer, args) -> tuple:
    inputs = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if len(inputs) not in (2, 3):
        raise UnsupportedModelError(f"{type(layer).__name__} layer {layer.name!r}: expected [query, value(, key)]")
    return inputs[0], inputs[1], inputs[2] if len(inputs) == 3 else inputs[1]


def _attention(e, layer, args, kwargs) -> _Tensor:
    q_t, v_t, k_t = _qvk(e, layer, args)
    causal = _check_call(layer, kwargs, [q_t, v_t, k_t])
    g = e.g
    q, v, k = (_btf(e, layer, t) for t in (q_t, v_t, k_t))  # (B, T, D)
    kind = type(layer).__name__
    scale = getattr(layer, "scale", None)
    if kind == "Attention" and layer.score_mode == "dot":
        scores = g.op1("MatMul", [q, g.op1("Transpose", [k], "k_t", perm=[0, 2, 1])], "scores")  # (B, Tq, Tv)
        if scale is not None:
            scores = g.op1("Mul", [scores, g.const("att_scale", _f32(scale.numpy()))], "scaled")
    else:
        q4 = g.op1("Unsqueeze", [q, g.const("ax2", _int64(2))], "q4")  # (B, Tq, 1, D)
        k4 = g.op1("Unsqueeze", [k, g.const("ax1", _int64(1))], "k4")  # (B, 1, Tv, D)
        qk = g.op1("Add", [q4, k4], "qk")
        if kind == "Attention":  # concat
            if scale is not None:
                qk = g.op1("Mul", [qk, g.const("att_scale", _f32(scale.numpy()))], "qk_scaled")
            summed = g.op1("ReduceSum", [g.op1("Tanh", [qk], "qk_tanh"), g.const("axm1", _int64(-1))], "qk_sum",
                           keepdims=0)
            scores = g.op1("Mul", [summed, g.const("concat_w", _f32(layer.concat_score_weight.numpy()))], "scores")
        else:  # AdditiveAttention
            th = g.op1("Tanh", [qk], "qk_tanh")
            if layer.use_scale:
                th = g.op1("Mul", [th, g.const("add_scale", _f32(layer.scale.numpy()))], "qk_scaled")
            scores = g.op1("ReduceSum", [th, g.const("axm1", _int64(-1))], "scores", keepdims=0)
    return _Tensor(_softmax_apply(g, scores, v, causal), "btf")


def _project(e, dense, x: str, hint: str) -> str:
    """EinsumDense (B, T, F) -> (B, T, heads, dim) as MatMul + bias + Reshape."""
    g = e.g
    W = np.asarray(dense.kernel.numpy())  # (F, heads, dim)
    F, heads, dim = W.shape
    y = g.op1("MatMul", [x, g.const(f"{hint}_W", _f32(W.reshape(F, heads * dim)))], hint)
    if dense.bias is not None:
        y = g.op1("Add", [y, g.const(f"{hint}_b", _f32(np.asarray(dense.bias.numpy()).reshape(-1)))], f"{hint}_b")
    y = g.op1("Reshape", [y, g.const("bthd", _int64(0, 0, heads, dim))], f"{hint}_4d")  # (B, T, heads, dim)
    return g.op1("Transpose", [y], f"{hint}_heads", perm=[0, 2, 1, 3])  # (B, heads, T, dim)


def _multi_head(e, layer, args, kwargs) -> _Tensor:
    names = ("query", "value", "key")
    given = dict(zip(names, args))
    given.update({n: kwargs[n] for n in names if kwargs.get(n) is not None})
    if "query" not in given or "value" not in given:
        raise UnsupportedModelError(f"MultiHeadAttention layer {layer.name!r}: expected query and value")
    q_t, v_t = given["query"], given["value"]
    k_t = given.get("key", v_t)
    causal = _check_call(layer, kwargs, [q_t, v_t, k_t])
    if getattr(layer, "_use_gate", False) or getattr(layer, "_sliding_window", None) is not None:
        raise UnsupportedModelError(f"MultiHeadAttention layer {layer.name!r} with a gate or a sliding window")
    if layer._attention_axes not in (None, (1,), [1]):
        raise UnsupportedModelError(f"MultiHeadAttention layer {layer.name!r} with attention_axes="
                                    f"{layer._attention_axes}")
    g = e.g
    q_in, v_in, k_in = (_btf(e, layer, t) for t in (q_t, v_t, k_t))
    q = _project(e, layer._query_dense, q_in, "mha_q")
    k = _project(e, layer._key_dense, k_in, "mha_k")
    v = _project(e, layer._value_dense, v_in, "mha_v")  # (B, heads, T, dim)
    q = g.op1("Mul", [q, g.const("inv_sqrt_dk", np.array(layer._inverse_sqrt_key_dim, np.float32))], "mha_q_scaled")
    scores = g.op1("MatMul", [q, g.op1("Transpose", [k], "mha_kt", perm=[0, 1, 3, 2])], "mha_scores")
    out = _softmax_apply(g, scores, v, causal)  # (B, heads, T, dim)
    out = g.op1("Transpose", [out], "mha_bthd", perm=[0, 2, 1, 3])
    Wo = np.asarray(layer._output_dense.kernel.numpy())  # (heads, dim, out)
    heads, dim, width = Wo.shape
    out = g.op1("Reshape", [out, g.const("bt_hd", _int64(0, 0, heads * dim))], "mha_concat")
    out = g.op1("MatMul", [out, g.const("mha_o_W", _f32(Wo.reshape(heads * dim, width)))], "mha_o")
    if layer._output_dense.bias is not None:
        out = g.op1("Add", [out, g.const("mha_o_b", _f32(layer._output_dense.bias.numpy()))], "mha")
    return _Tensor(out, "btf")


ATTENTION_EMITTERS = {"Attention": _attention, "AdditiveAttention": _attention, "MultiHeadAttention": _multi_head}
