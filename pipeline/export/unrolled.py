"""Batch graph form: every ONNX ``GRU`` node unrolled over a fixed number of timesteps.

Owns: rewriting a native-GRU ``model.onnx`` into ``model_unrolled.onnx``, the same function
written as per-step ``Gemm`` + activation + elementwise nodes for one fixed sequence length.
Imports: numpy, onnx, pipeline.export.graph, pipeline.export.activations, pipeline.export.base;
build stage only. Reads/writes: nothing (ModelProto in, ModelProto out).

Why: onnxruntime's GRU kernel spends about half its time outside the matrix products. Unrolled,
each gate is one ``Gemm`` whose activation onnxruntime fuses into it (``FusedGemm``), the input
projection carries the bias through a constant-1 input column, and no step copies a slice:

    x_t  = [x_t, 1]                                   (B, F+1)   one Concat + Split for all steps
    z    = f(x_t @ [Wz; bz] + h @ Rz)                 (B, H)     bz = Wbz + Rbz
    r    = f(x_t @ [Wr; br] + h @ Rr)
    n    = g(x_t @ [Wn; Wbn] + r * (h @ Rn + Rbn))    linear_before_reset=1 (Keras reset_after=True)
    n    = g(x_t @ [Wn; Wbn + Rbn] + (r * h) @ Rn)    linear_before_reset=0
    h'   = n + z * (h - n)                           == (1 - z) * n + z * h
On one core of the reference machine this form runs the reference model (T=50, F=8, GRU(64)) at
about 40k samples/s against about 30k for the GRU op (64-256-row batches). It is only ever used
for inputs of exactly ``timesteps`` steps without masking; the runtime falls back to the native
graph for anything else. The build verifies it against Keras like ``model.onnx``.

Supported: GRU nodes with direction forward, reverse or bidirectional, linear_before_reset 0/1,
activations Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu, Softsign, Softplus, Elu, Affine, and the
``keras:<name>`` placeholders pipeline.export.native writes for Keras activations the op does not have
(written with pipeline.export.activations: this is how such a model.onnx is built); no sequence_lens, initial_h, clip or
batch-major layout (so masked models keep only the native graph).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pipeline.export.activations import emit_activation
from pipeline.export.base import UnsupportedModelError
from pipeline.export.graph import GraphBuilder

__all__ = ["unroll_grus"]

_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu", "HardSigmoid", "LeakyRelu", "Softsign", "Softplus", "Elu", "Affine"}
_DEFAULT_ALPHA = {"HardSigmoid": 0.2, "LeakyRelu": 0.01, "Elu": 1.0, "Affine": 1.0}
_DEFAULT_BETA = {"HardSigmoid": 0.5, "Affine": 0.0}
_TIME_MOVERS = {"Conv", "MaxPool", "AveragePool", "Pad", "Tile"}  # pipeline.export.layers' time-axis changes
_KERAS = "keras:"  # pipeline.export.native's placeholder for a Keras activation the GRU op lacks


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activation_specs(attrs: dict, directions: int) -> list[tuple[str, float | None, float | None]]:
    """[(op, alpha, beta)] * 2 per direction: gate activation f, then candidate activation g."""
    names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if not names:
        names = ["Sigmoid", "Tanh"] * directions
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    specs, ai, bi = [], 0, 0
    for name in names:
        if name not in _ACTIVATIONS and not name.startswith(_KERAS):
            raise UnsupportedModelError(f"GRU activation {name} cannot be unrolled; supported: {sorted(_ACTIVATIONS)}")
        alpha = beta = None
        if name in _DEFAULT_ALPHA:  # alpha/beta lists hold entries only for activations that take them
            alpha = float(alphas[ai]) if ai < len(alphas) else _DEFAULT_ALPHA[name]
            ai += 1
        if name in _DEFAULT_BETA:
            beta = float(betas[bi]) if bi < len(betas) else _DEFAULT_BETA[name]
            bi += 1
        specs.append((name, alpha, beta))
    return specs


def _activate(e: GraphBuilder, x: str, spec, hint: str) -> str:
    name, alpha, beta = spec
    if name.startswith(_KERAS):
        return emit_activation(e, name[len(_KERAS):], x, hint)
    if name == "Affine":  # not an operator of its own since opset 10
        if alpha != 1.0:
            x = e.op1("Mul", [x, e.const("alpha", np.array(alpha, np.float32))], hint)
        return x if beta == 0.0 else e.op1("Add", [x, e.const("beta", np.array(beta, np.float32))], hint)
    attrs = {k: v for k, v in (("alpha", alpha), ("beta", beta)) if v is not None}
    return e.op1(name, [x], hint, **attrs)


def _unroll_one(e: GraphBuilder, node: onnx.NodeProto, init: dict[str, np.ndarray], T: int,
                consumed: set[str]) -> None:
    """Emit the unrolled equivalent of one GRU node, writing the node's own output names."""
    attrs = _attrs(node)
    inputs = list(node.input) + [""] * (6 - len(node.input))
    X, W_name, R_name, B_name, seq_lens, h0 = inputs[:6]
    if seq_lens or h0:
        raise UnsupportedModelError("GRU with sequence_lens (masking) or initial_h keeps the native graph")
    if attrs.get("clip") is not None or attrs.get("layout", 0) != 0:
        raise UnsupportedModelError("GRU with clip or batch-major layout keeps the native graph")
    if W_name not in init or R_name not in init or (B_name and B_name not in init):
        raise UnsupportedModelError("GRU weights must be initializers to be unrolled")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    dirs = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}[direction]
    H = int(attrs["hidden_size"])
    lbr = int(attrs.get("linear_before_reset", 0))
    W, R = init[W_name], init[R_name]  # (D, 3H, F), (D, 3H, H)
    B = init[B_name] if B_name else np.zeros((len(dirs), 6 * H), np.float32)  # (D, 6H)
    acts = _activation_specs(attrs, len(dirs))

    # x_t = [X[t], 1] for every step, from one Concat and one Split: (T, B, F) -> T x (B, F+1)
    shape = e.op1("Shape", [X], "shape")
    tb = e.op1("Slice", [shape, e.const("s0", np.array([0], np.int64)), e.const("s2", np.array([2], np.int64))], "tb")
    tb1 = e.op1("Concat", [tb, e.const("one_i", np.array([1], np.int64))], "tb1", axis=0)
    ones = e.op1("ConstantOfShape", [tb1], "ones", value=numpy_helper.from_array(np.ones(1, np.float32)))
    xa = e.op1("Concat", [X, ones], "xa", axis=2)  # (T, B, F+1)
    pieces = e.op("Split", [xa, e.const("split", np.ones(T, np.int64))], "xs", n_out=T, axis=0)
    ax0 = e.const("ax0", np.array([0], np.int64))
    xs = [e.op1("Squeeze", [p, ax0], "x") for p in pieces]  # T x (B, F+1)

    def gate(M: np.ndarray, k: int) -> np.ndarray:
        return M[k * H:(k + 1) * H]  # rows of gate k (z=0, r=1, n=2)

    finals, per_step = [], []
    for d, dname in enumerate(dirs):
        f_act, g_act = acts[2 * d], acts[2 * d + 1]
        Wd, Rd, Bd = W[d], R[d], B[d]  # (3H, F), (3H, H), (6H,)
        Wb, Rb = Bd[:3 * H], Bd[3 * H:]  # (3H,) each
        n_bias = gate(Wb, 2) if lbr else gate(Wb, 2) + gate(Rb, 2)
        Wz = e.const("Wz", np.vstack([gate(Wd, 0).T, gate(Wb, 0) + gate(Rb, 0)]).astype(np.float32))  # (F+1, H)
        Wr = e.const("Wr", np.vstack([gate(Wd, 1).T, gate(Wb, 1) + gate(Rb, 1)]).astype(np.float32))  # (F+1, H)
        Wn = e.const("Wn", np.vstack([gate(Wd, 2).T, n_bias]).astype(np.float32))  # (F+1, H)
        Rz, Rr, Rn = (e.const(k, gate(Rd, i).T.astype(np.float32).copy())  # (H, H) each
                      for i, k in enumerate(("Rz", "Rr", "Rn")))
        Rbn = e.const("Rbn", gate(Rb, 2).astype(np.float32))  # (H,)
        order = range(T) if dname == "forward" else range(T - 1, -1, -1)
        h = None
        hs: dict[int, str] = {}
        for t in order:
            x = xs[t]
            if h is None:  # h0 = 0: the recurrent products vanish
                z = _activate(e, e.op1("Gemm", [x, Wz], "zp"), f_act, "z")
                r = _activate(e, e.op1("Gemm", [x, Wr], "rp"), f_act, "r")
                rec = e.op1("Mul", [r, Rbn], "rh") if lbr else None
                n = _activate(e, e.op1("Gemm", [x, Wn] + ([rec] if rec else []), "np"), g_act, "n")
                h = e.op1("Sub", [n, e.op1("Mul", [z, n], "zn")], "h")
            else:
                z = _activate(e, e.op1("Gemm", [x, Wz, e.op1("Gemm", [h, Rz], "hz")], "zp"), f_act, "z")
                r = _activate(e, e.op1("Gemm", [x, Wr, e.op1("Gemm", [h, Rr], "hr")], "rp"), f_act, "r")
                if lbr:
                    rec = e.op1("Mul", [r, e.op1("Gemm", [h, Rn, Rbn], "hn")], "rh")
                else:
                    rec = e.op1("Gemm", [e.op1("Mul", [r, h], "rh"), Rn], "hn")
                n = _activate(e, e.op1("Gemm", [x, Wn, rec], "np"), g_act, "n")
                h = e.op1("Add", [n, e.op1("Mul", [z, e.op1("Sub", [h, n], "d")], "zd")], "h")
            hs[t] = h
        finals.append(h)
        per_step.append(hs)

    Y_name = node.output[0] if len(node.output) > 0 else ""
    Yh_name = node.output[1] if len(node.output) > 1 else ""
    if Yh_name:
        parts = [e.op1("Unsqueeze", [h, ax0], "yh") for h in finals]  # D x (1, B, H)
        if len(parts) > 1:
            e.node("Concat", parts, [Yh_name], axis=0)  # (D, B, H)
        else:
            e.node("Identity", parts, [Yh_name])
    if Y_name and Y_name in consumed:
        ax01 = e.const("ax01", np.array([0, 1], np.int64))
        steps = []
        for t in range(T):
            per_dir = [e.op1("Unsqueeze", [hs[t], ax01], "y") for hs in per_step]  # D x (1, 1, B, H)
            steps.append(per_dir[0] if len(per_dir) == 1 else e.op1("Concat", per_dir, "yt", axis=1))
        e.node("Concat", steps, [Y_name], axis=0)  # (T, D, B, H)


def unroll_grus(model: onnx.ModelProto, timesteps: int) -> onnx.ModelProto:
    """Return a copy of ``model`` whose GRU nodes are unrolled over ``timesteps`` steps.

    The graph input keeps its name and layout; its time axis becomes the fixed ``timesteps``.
    Raises UnsupportedModelError when a GRU cannot be unrolled (the caller then ships only the
    native graph).
    """
    if timesteps < 1:
        raise UnsupportedModelError(f"timesteps must be >= 1, got {timesteps}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    if not any(n.op_type == "GRU" for n in g.node):
        if "_unrolled_T" in g.name:
            raise UnsupportedModelError("model.onnx is itself written step by step (a GRU activation the ONNX GRU "
                                        "op does not have)")
        raise UnsupportedModelError("the graph has no GRU node to unroll")
    movers = sorted({n.op_type for n in g.node if n.op_type in _TIME_MOVERS}
                    | {"Slice (Cropping1D)" for n in g.node if any(o.startswith("cropped_") for o in n.output)})
    if movers:
        raise UnsupportedModelError(f"layers before a GRU may change the number of timesteps ({', '.join(movers)}), "
                                    "so the per-step graph is not built")
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    consumed = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    e = GraphBuilder(prefix="unr_", taken=taken, name_nodes=False)
    new_nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type != "GRU":
            new_nodes.append(node)
            continue
        start = len(e.nodes)
        _unroll_one(e, node, init, timesteps, consumed)
        new_nodes.extend(e.nodes[start:])
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + e.inits)
    # the time axis of the input is now fixed: (batch, T, F) features or (batch, T) token ids
    dims = g.input[0].type.tensor_type.shape.dim
    if len(dims) >= 2:
        dims[1].Clear()
        dims[1].dim_value = int(timesteps)
    g.name = f"{g.name}_unrolled_T{timesteps}"
    del g.value_info[:]
    onnx.checker.check_model(out)
    return out
