"""ONNX graphs for the fused kernel's tests, written with ``onnx.helper`` from numpy weights (no
TensorFlow, Keras or trained model): any stack of GRU layers on a float or a token input, pooled, with
Dense layers and a k-way head (``gru_graph``), and a one-node Tanh (``tanh_proto``). Used by
tests/runtime/test_fused_tokens_tanh.py.

Writing a graph needs the ``onnx`` package (the build extra), imported inside the functions, as
tests/tiny_models.py does.
"""

from __future__ import annotations

import numpy as np

OPSET = 17


def gru_graph(rng, features: int, layers, head: str, dense=(), outputs: int = 1, activation: str = "sigmoid",
           vocab: int = 0, dense_scale: float = 0.5):
    """An ONNX graph: x (N, T, F) float, or (vocab > 0) ids (N, T) int64 -> Gather(Embedding (vocab, F));
    -> Transpose -> GRU layers ``layers`` [(H, direction, linear_before_reset)] (each but the last handing
    on its sequence, directions concatenated) -> ReduceMean over time ("avg") or the last state ("last")
    -> Dense layers [(units, "linear" | "relu" | "sigmoid" | "tanh")] -> Gemm(k = outputs) -> Sigmoid or
    Softmax. Random weights (numpy, seeded by rng)."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("axes0", np.array([0], np.int64))
    const("axes1", np.array([1], np.int64))
    if vocab:
        table = rng.standard_normal((vocab, features)).astype(np.float32)
        table[0] = 0  # the padding id's row
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])]
        nodes.append(helper.make_node("Gather", [const("embedding", table), "x"], ["emb"], axis=0))
        cur = "emb"
    else:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features])]
        cur = "x"
    nodes.append(helper.make_node("Transpose", [cur], ["seq0"], perm=[1, 0, 2]))
    cur, F = "seq0", features
    for li, (H, direction, lbr) in enumerate(layers):
        D = 2 if direction == "bidirectional" else 1
        W = (rng.standard_normal((D, 3 * H, F)) * 0.4).astype(np.float32)
        R = (rng.standard_normal((D, 3 * H, H)) * 0.4).astype(np.float32)
        B = (rng.standard_normal((D, 6 * H)) * 0.1).astype(np.float32)
        p = f"l{li}_"
        nodes.append(helper.make_node("GRU", [cur, const(p + "W", W), const(p + "R", R), const(p + "B", B)],
                                      [p + "Y", p + "Yh"], hidden_size=H, direction=direction,
                                      linear_before_reset=lbr))
        last = li == len(layers) - 1
        if last and head == "last":
            if D == 1:
                nodes.append(helper.make_node("Squeeze", [p + "Yh", "axes0"], ["feat"]))
            else:
                nodes += [helper.make_node("Split", [p + "Yh"], [p + "h0", p + "h1"], axis=0),
                          helper.make_node("Squeeze", [p + "h0", "axes0"], [p + "s0"]),
                          helper.make_node("Squeeze", [p + "h1", "axes0"], [p + "s1"]),
                          helper.make_node("Concat", [p + "s0", p + "s1"], ["feat"], axis=1)]
            F = D * H
            break
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [p + "Y", "axes1"], [p + "seq"]))
        else:
            nodes += [helper.make_node("Split", [p + "Y"], [p + "y0", p + "y1"], axis=1),
                      helper.make_node("Squeeze", [p + "y0", "axes1"], [p + "q0"]),
                      helper.make_node("Squeeze", [p + "y1", "axes1"], [p + "q1"]),
                      helper.make_node("Concat", [p + "q0", p + "q1"], [p + "seq"], axis=2)]
        cur, F = p + "seq", D * H
    if head == "avg":
        nodes.append(helper.make_node("ReduceMean", [cur], ["feat"], axes=[0], keepdims=0))
    cur = "feat"
    for di, (units, act) in enumerate(dense):
        W = (rng.standard_normal((F, units)) * dense_scale).astype(np.float32)
        b = (rng.standard_normal(units) * 0.2).astype(np.float32)
        out = f"d{di}" if act == "linear" else f"d{di}_pre"
        nodes.append(helper.make_node("Gemm", [cur, const(f"d{di}_W", W), const(f"d{di}_b", b)], [out]))
        if act != "linear":
            nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[act], [out],
                                          [f"d{di}"]))
        cur, F = f"d{di}", units
    hw = (rng.standard_normal((F, outputs)) * 0.5).astype(np.float32)
    hb = (0.1 * np.arange(outputs)).astype(np.float32)
    nodes.append(helper.make_node("Gemm", [cur, const("head_W", hw), const("head_b", hb)], ["logit"]))
    name = "probability" if outputs == 1 else "probabilities"
    nodes.append(helper.make_node("Softmax" if activation == "softmax" else "Sigmoid", ["logit"], [name],
                                  **({"axis": -1} if activation == "softmax" else {})))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                                ["batch", outputs])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    proto.ir_version = 8
    return proto, name


def tanh_proto():
    """x (n,) float -> Tanh -> y: onnxruntime's Tanh op alone."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Tanh", ["x"], ["y"])], "tanh",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    return proto
