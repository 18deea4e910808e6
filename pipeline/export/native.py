"""Native ONNX export: Keras GRU layers become the ONNX ``GRU`` op.

Owns: walking a linear Keras model layer by layer and emitting an equivalent ONNX graph with
onnx.helper, mapping GRU (and Bidirectional GRU) onto the native op instead of the ``Loop``
that tf2onnx produces for Keras 3. Imports: numpy, onnx, keras (build stage only).
Reads: the model's weights. Writes: nothing (returns a ModelProto).

Mapping (Keras -> ONNX GRU, gate order z, r, h in both):
    W = kernel.T            (3H, F)        per direction, stacked (D, 3H, F)
    R = recurrent_kernel.T  (3H, H)        (D, 3H, H)
    B = [input bias, recurrent bias]  (6H,)  reset_after=False puts zeros in the recurrent half
    reset_after=True  <-> linear_before_reset=1
    Masking / Embedding(mask_zero) over right-padded rows <-> sequence_lens (count of unmasked steps);
        on padded steps the graph reproduces Keras' returned values (last real output repeated for a
        plain GRU, zeros inside Bidirectional and for go_backwards) so mask-blind layers such as
        GlobalMaxPooling1D see the same numbers as in Keras
    go_backwards <-> direction="reverse"; Bidirectional <-> direction="bidirectional"
The op is time-major (layout=0): the graph transposes once at the input and keeps the time-major
layout between stacked GRUs.

Supported layers: InputLayer, Masking, Embedding, GRU, Bidirectional(GRU), Dropout-like layers
(identity at inference), GlobalAveragePooling1D, GlobalMaxPooling1D, Dense (on 2-D tensors).
Anything else raises ``UnsupportedModelError`` so the caller can fall back to tf2onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.errors import ExportError

__all__ = ["UnsupportedModelError", "export_native", "stream_support", "OUTPUT_NAME"]

OUTPUT_NAME = "probability"

# Keras activation name -> (ONNX RNN activation, alpha, beta); alpha/beta None when unused.
_RNN_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
}
_DENSE_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "linear": None}
_IDENTITY_LAYERS = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization"}


class UnsupportedModelError(ExportError):
    """The model contains something the native exporter cannot express exactly."""


@dataclass
class _Tensor:
    """The value flowing between layers while the graph is emitted."""

    name: str
    layout: str                    # "btf" (batch, time, feat) | "tbf" (time, batch, feat) | "bf"
    lengths: Optional[str] = None  # int32 (batch,) sequence lengths when a mask is active
    mask_tb1: Optional[str] = None # float (time, batch, 1) 1.0 on real steps, when a mask is active


@dataclass
class _Graph:
    """Accumulates nodes and initializers, hands out unique names."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    _n: int = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], hint: Optional[str] = None, n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs

    def op1(self, op_type: str, inputs: list[str], hint: Optional[str] = None, **attrs) -> str:
        return self.op(op_type, inputs, hint, 1, **attrs)[0]


def _activation_name(fn) -> str:
    name = getattr(fn, "__name__", str(fn))
    return name


def _layer_kind(layer) -> str:
    return type(layer).__name__


def stream_support(model) -> Optional[str]:
    """None when the model can be streamed step by step, else the reason it cannot."""
    for layer in model.layers:
        kind = _layer_kind(layer)
        if kind == "Bidirectional":
            return "a Bidirectional GRU needs the whole sequence (its backward pass starts at the end)"
        if kind == "GRU" and layer.go_backwards:
            return "a go_backwards GRU needs the whole sequence (it starts at the end)"
        if kind == "GlobalMaxPooling1D":
            return "max pooling over time needs the whole sequence"
        if kind == "GRU" and not layer.return_sequences and layer is not _last_rnn(model):
            return "only the last GRU may drop the sequence axis"
    return None


def _last_rnn(model):
    rnns = [l for l in model.layers if _layer_kind(l) in ("GRU", "Bidirectional")]
    return rnns[-1] if rnns else None


class _Emitter:
    def __init__(self, model, stateful: bool) -> None:
        self.model = model
        self.g = _Graph()
        self.stateful = stateful
        # (state_in, state_out, (D, H)): GRU hidden states h_in_i, then the running mean and step
        # count of a streamed average pooling (avg_mean_in (1, batch, H), avg_count_in (1, batch, 1)).
        self.state_pairs: list[tuple[str, str, tuple[int, int]]] = []
        self.mask_value: Optional[float] = None

    # ------------------------------------------------------------------ masks
    def _set_mask(self, t: _Tensor, mask_bt_bool: str) -> _Tensor:
        """Attach lengths and a (T, B, 1) float mask derived from a (B, T) boolean mask."""
        g = self.g
        mask_bt = g.op1("Cast", [mask_bt_bool], "mask_f", to=TensorProto.FLOAT)  # (B, T)
        axis1 = g.const("axis1", np.array([1], dtype=np.int64))
        lengths_f = g.op1("ReduceSum", [mask_bt, axis1], "len_f", keepdims=0)  # (B,)
        t.lengths = g.op1("Cast", [lengths_f], "lengths", to=TensorProto.INT32)
        mask_tb = g.op1("Transpose", [mask_bt], "mask_tb", perm=[1, 0])
        t.mask_tb1 = g.op1("Unsqueeze", [mask_tb, g.const("axis2", np.array([2], dtype=np.int64))], "mask_tb1")
        return t

    # ------------------------------------------------------------------ layers
    def masking(self, layer, t: _Tensor) -> _Tensor:
        if t.layout != "btf":
            raise UnsupportedModelError("Masking is supported only directly on the model input")
        g = self.g
        mv = g.const("mask_value", np.array(float(layer.mask_value), dtype=np.float32))
        eq = g.op1("Equal", [t.name, mv], "eq")
        neq = g.op1("Not", [eq], "neq")  # (B, T, F)
        neq_f = g.op1("Cast", [neq], "neq_f", to=TensorProto.FLOAT)
        any_f = g.op1("ReduceMax", [neq_f], "any_f", axes=[2], keepdims=0)  # (B, T)
        any_b = g.op1("Cast", [any_f], "any_b", to=TensorProto.BOOL)
        self.mask_value = float(layer.mask_value)
        return self._set_mask(_Tensor(t.name, t.layout), any_b)

    def embedding(self, layer, t: _Tensor) -> _Tensor:
        g = self.g
        table = g.const("embeddings", np.asarray(layer.embeddings.numpy(), dtype=np.float32))
        ids = g.op1("Cast", [t.name], "ids", to=TensorProto.INT64)
        out = _Tensor(g.op1("Gather", [table, ids], "embedded", axis=0), "btf")  # (B, T, E)
        if layer.mask_zero:
            zero = g.const("zero_id", np.array(0, dtype=np.int64))
            nz = g.op1("Not", [g.op1("Equal", [ids, zero], "is_pad")], "not_pad")  # (B, T)
            out = self._set_mask(out, nz)
        return out

    def _gru_weights(self, gru) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cell = gru.cell
        H = cell.units
        W = np.asarray(cell.kernel.numpy(), dtype=np.float32).T              # (3H, F)
        R = np.asarray(cell.recurrent_kernel.numpy(), dtype=np.float32).T    # (3H, H)
        if cell.use_bias:
            b = np.asarray(cell.bias.numpy(), dtype=np.float32)
            B = b.reshape(-1) if cell.reset_after else np.concatenate([b, np.zeros(3 * H, np.float32)])
        else:
            B = np.zeros(6 * H, dtype=np.float32)
        return W, R, B

    def _gru_attrs(self, grus) -> dict:
        acts, alphas, betas, any_param = [], [], [], False
        for gru in grus:
            for fn in (gru.cell.recurrent_activation, gru.cell.activation):
                key = _activation_name(fn)
                if key not in _RNN_ACTIVATIONS:
                    raise UnsupportedModelError(
                        f"GRU activation {key!r} has no ONNX equivalent; supported: {sorted(_RNN_ACTIVATIONS)}"
                    )
                op, a, b = _RNN_ACTIVATIONS[key]
                acts.append(op)
                if a is not None:
                    alphas.append(a)
                    betas.append(b)
                    any_param = True
        attrs = {"activations": acts, "hidden_size": grus[0].cell.units,
                 "linear_before_reset": int(grus[0].cell.reset_after)}
        if any_param:
            attrs["activation_alpha"] = alphas
            attrs["activation_beta"] = betas
        return attrs

    def _check_gru(self, gru) -> None:
        if _layer_kind(gru) != "GRU":
            raise UnsupportedModelError(f"recurrent layer {_layer_kind(gru)} is not a GRU")
        if type(gru.cell).__name__ != "GRUCell":
            raise UnsupportedModelError(f"GRU with a custom cell {type(gru.cell).__name__}")
        if gru.stateful:
            raise UnsupportedModelError("stateful=True GRU layers are not supported")
        if gru.cell.reset_after not in (True, False):
            raise UnsupportedModelError("unknown reset_after")

    def _run_gru(self, t: _Tensor, grus, direction: str) -> tuple[str, str, int]:
        """Emit one GRU node; returns (Y (T, D, B, H), Y_h (D, B, H), D)."""
        g = self.g
        x = t.name
        if t.layout == "btf":
            x = g.op1("Transpose", [x], "x_tbf", perm=[1, 0, 2])
        elif t.layout != "tbf":
            raise UnsupportedModelError("a GRU must receive a 3-D sequence")
        Ws, Rs, Bs = zip(*(self._gru_weights(gr) for gr in grus))
        D, H = len(grus), grus[0].cell.units
        inputs = [x, g.const("W", np.stack(Ws)), g.const("R", np.stack(Rs)), g.const("B", np.stack(Bs))]
        # Streaming chunks are never padded, so the stream graph ignores masks.
        inputs.append("" if self.stateful else (t.lengths or ""))
        if self.stateful:
            h_in = f"h_in_{len(self.state_pairs)}"
            g.inputs.append(helper.make_tensor_value_info(h_in, TensorProto.FLOAT, [D, "batch", H]))
            inputs.append(h_in)
        while inputs and inputs[-1] == "":
            inputs.pop()
        Y, Y_h = g.op("GRU", inputs, "gru", n_out=2, direction=direction, **self._gru_attrs(grus))
        if self.stateful:
            h_out = f"h_out_{len(self.state_pairs)}"
            self.g.nodes.append(helper.make_node("Identity", [Y_h], [h_out], name=g.name("state_out")))
            g.outputs.append(helper.make_tensor_value_info(h_out, TensorProto.FLOAT, [D, "batch", H]))
            self.state_pairs.append((h_in, h_out, (D, H)))
        return Y, Y_h, D

    def gru(self, layer, t: _Tensor) -> _Tensor:
        self._check_gru(layer)
        g = self.g
        direction = "reverse" if layer.go_backwards else "forward"
        Y, Y_h, _ = self._run_gru(t, [layer], direction)
        last = g.op1("Squeeze", [Y_h, g.const("axis0", np.array([0], dtype=np.int64))], "h_last")  # (B, H)
        if not layer.return_sequences:
            return _Tensor(last, "bf")
        seq = g.op1("Squeeze", [Y, g.const("axis1", np.array([1], dtype=np.int64))], "y_tbh")  # (T, B, H)
        if layer.go_backwards:
            # Keras returns the outputs in processing (reversed) order. Over right-padded masked rows
            # that order starts with T - L steps holding the initial state (zeros) and ends with the
            # real steps, while the *unreversed* mask is passed on; the full-time reversal of the ONNX
            # output (zeros past each row's length) reproduces exactly that.
            seq = g.op1("Slice", [seq, g.const("start", np.array([-1], np.int64)),
                                  g.const("end", np.array([np.iinfo(np.int64).min], np.int64)),
                                  g.const("axes", np.array([0], np.int64)),
                                  g.const("step", np.array([-1], np.int64))], "y_rev")
        elif t.mask_tb1 is not None and not self.stateful and not getattr(layer, "zero_output_for_mask", False):
            seq = self._carry_last(seq, last, t.mask_tb1)
        return _Tensor(seq, "tbf", t.lengths, t.mask_tb1)

    def _carry_last(self, seq: str, last: str, mask_tb1: str) -> str:
        """Keras (zero_output_for_mask=False) repeats the last real output on masked steps; ONNX
        writes zeros there. Only visible to layers that ignore the mask (GlobalMaxPooling1D)."""
        g = self.g
        real = g.op1("Cast", [mask_tb1], "real_tb1", to=TensorProto.BOOL)  # (T, B, 1)
        return g.op1("Where", [real, seq, last], "y_carried")  # (T, B, H); `last` (B, H) broadcasts

    def _merge(self, a: str, b: str, mode: str, axis: int) -> str:
        g = self.g
        if mode == "concat":
            return g.op1("Concat", [a, b], "merged", axis=axis)
        if mode == "sum":
            return g.op1("Add", [a, b], "merged")
        if mode == "mul":
            return g.op1("Mul", [a, b], "merged")
        if mode == "ave":
            return g.op1("Mul", [g.op1("Add", [a, b], "sum"), g.const("half", np.array(0.5, np.float32))], "merged")
        raise UnsupportedModelError(f"Bidirectional merge_mode {mode!r} is not supported")

    def bidirectional(self, layer, t: _Tensor) -> _Tensor:
        fw, bw = layer.forward_layer, layer.backward_layer
        self._check_gru(fw)
        self._check_gru(bw)
        if fw.go_backwards or not bw.go_backwards:
            raise UnsupportedModelError("Bidirectional with a go_backwards forward layer")
        if fw.cell.reset_after != bw.cell.reset_after or fw.return_sequences != bw.return_sequences:
            raise UnsupportedModelError("Bidirectional with differently configured directions")
        if layer.merge_mode is None:
            raise UnsupportedModelError("Bidirectional merge_mode=None returns two outputs")
        g = self.g
        Y, Y_h, _ = self._run_gru(t, [fw, bw], "bidirectional")
        if layer.return_sequences:
            y_f, y_b = g.op("Split", [Y], "y_dir", n_out=2, axis=1)  # (T, 1, B, H) each
            ax = g.const("axis1", np.array([1], dtype=np.int64))
            y_f, y_b = g.op1("Squeeze", [y_f, ax]), g.op1("Squeeze", [y_b, ax])
            # Bidirectional forces zero_output_for_mask=True on its layers when returning sequences,
            # which matches ONNX's zeros past each length; honour a layer that was changed back.
            # The backward layer's masked steps hold its initial state (zeros) either way.
            if t.mask_tb1 is not None and not self.stateful and not getattr(fw, "zero_output_for_mask", True):
                h_f_last = g.op1("Squeeze", [g.op("Split", [Y_h], "h_dir", n_out=2, axis=0)[0],
                                             g.const("axis0", np.array([0], np.int64))], "h_f_last")
                y_f = self._carry_last(y_f, h_f_last, t.mask_tb1)
            merged = self._merge(y_f, y_b, layer.merge_mode, axis=2)  # (T, B, *)
            return _Tensor(merged, "tbf", t.lengths, t.mask_tb1)
        h_f, h_b = g.op("Split", [Y_h], "h_dir", n_out=2, axis=0)  # (1, B, H) each
        ax = g.const("axis0", np.array([0], dtype=np.int64))
        h_f, h_b = g.op1("Squeeze", [h_f, ax]), g.op1("Squeeze", [h_b, ax])
        return _Tensor(self._merge(h_f, h_b, layer.merge_mode, axis=1), "bf")

    def pooling(self, layer, t: _Tensor, kind: str) -> _Tensor:
        g = self.g
        if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "keepdims", False):
            raise UnsupportedModelError("pooling must be channels_last without keepdims")
        if t.layout not in ("btf", "tbf"):
            raise UnsupportedModelError("pooling needs a 3-D sequence")
        axis = 1 if t.layout == "btf" else 0
        if t.layout == "btf" and t.mask_tb1 is not None:
            raise UnsupportedModelError("masked pooling directly on the input")
        if kind == "avg" and self.stateful:
            return self._streamed_average(layer, t)
        if kind == "avg":
            if t.mask_tb1 is None:
                return _Tensor(g.op1("ReduceMean", [t.name], "avg", axes=[axis], keepdims=0), "bf")
            masked = g.op1("Mul", [t.name, t.mask_tb1], "masked")
            total = g.op1("ReduceSum", [masked, g.const("axis0", np.array([0], np.int64))], "sum", keepdims=0)
            count = g.op1("ReduceSum", [t.mask_tb1, g.const("axis0", np.array([0], np.int64))], "count", keepdims=0)
            return _Tensor(g.op1("Div", [total, count], "avg"), "bf")  # (B, H)
        # Keras 3 GlobalMaxPooling1D ignores the mask and takes the max over every step, padded ones
        # included; the GRU emitters reproduce Keras' values on padded steps, so a plain max is exact.
        return _Tensor(g.op1("ReduceMax", [t.name], "max", axes=[axis], keepdims=0), "bf")

    def _streamed_average(self, layer, t: _Tensor) -> _Tensor:
        """Mean over every step seen so far, carried across chunks as (mean, step count) states.

        mean_out = (mean_in * count_in + sum of this chunk's outputs) / (count_in + chunk steps), so a
        stream of chunks ends on the mean of the whole sequence (up to float32 summation order). The
        mean, not the sum, is carried so the state stays on the scale of a hidden state.
        """
        g = self.g
        if t.layout != "tbf":  # the one streaming check for average pooling (stream_support leaves it here)
            raise UnsupportedModelError("average pooling streams only right after a GRU")
        H = int(layer.output.shape[-1])  # (B, H) out of the pooling
        mean_in, count_in = "avg_mean_in", "avg_count_in"
        g.inputs.append(helper.make_tensor_value_info(mean_in, TensorProto.FLOAT, [1, "batch", H]))
        g.inputs.append(helper.make_tensor_value_info(count_in, TensorProto.FLOAT, [1, "batch", 1]))
        axis0 = g.const("axis0", np.array([0], np.int64))
        chunk_sum = g.op1("ReduceSum", [t.name, axis0], "chunk_sum", keepdims=1)  # (1, B, H)
        T = g.op1("Gather", [g.op1("Shape", [t.name], "seq_shape"), axis0], "chunk_steps", axis=0)  # (1,) int64
        steps = g.op1("Cast", [T], "steps", to=TensorProto.FLOAT)  # (1,)
        total = g.op1("Add", [g.op1("Mul", [mean_in, count_in], "sum_in"), chunk_sum], "sum_total")  # (1, B, H)
        # The state outputs are written by the nodes themselves (no Identity: each node costs per push).
        count, mean = "avg_count_out", "avg_mean_out"
        g.nodes.append(helper.make_node("Add", [count_in, steps], [count], name=g.name("Add")))  # (1, B, 1)
        g.nodes.append(helper.make_node("Div", [total, count], [mean], name=g.name("Div")))  # (1, B, H)
        for name, width in ((mean, H), (count, 1)):
            g.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "batch", width]))
        self.state_pairs += [(mean_in, "avg_mean_out", (1, H)), (count_in, "avg_count_out", (1, 1))]
        return _Tensor(g.op1("Squeeze", [mean, axis0], "avg_bh"), "bf")  # (B, H)

    def dense(self, layer, t: _Tensor) -> _Tensor:
        if t.layout != "bf":
            raise UnsupportedModelError("Dense is supported only on 2-D (batch, features) tensors")
        g = self.g
        act = _activation_name(layer.activation)
        if act not in _DENSE_ACTIVATIONS:
            raise UnsupportedModelError(f"Dense activation {act!r} is not supported")
        W = g.const("dense_W", np.asarray(layer.kernel.numpy(), dtype=np.float32))
        ins = [t.name, W]
        if layer.use_bias:
            ins.append(g.const("dense_b", np.asarray(layer.bias.numpy(), dtype=np.float32)))
        out = g.op1("Gemm", ins, "dense")
        if _DENSE_ACTIVATIONS[act]:
            out = g.op1(_DENSE_ACTIVATIONS[act], [out], act)
        return _Tensor(out, "bf")

    # ------------------------------------------------------------------ model
    def emit(self, input_name: str, opset: int) -> onnx.ModelProto:
        model = self.model
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UnsupportedModelError("models with several inputs or outputs")
        in_shape = tuple(model.inputs[0].shape)  # (None, T or None, F) or (None, T) for token ids
        token_input = len(in_shape) == 2
        dims = ["batch", "time" if in_shape[1] is None else int(in_shape[1])]
        if not token_input:
            dims.append(int(in_shape[2]))
        elem = TensorProto.INT64 if token_input else TensorProto.FLOAT
        self.g.inputs.insert(0, helper.make_tensor_value_info(input_name, elem, dims))
        t = _Tensor(input_name, "bt" if token_input else "btf")
        prev_output = None
        for layer in model.layers:
            kind = _layer_kind(layer)
            if kind == "InputLayer":
                continue
            # Linear chain check: each layer consumes the previous layer's output.
            consumed = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input
            if prev_output is not None and consumed is not prev_output:
                raise UnsupportedModelError(f"layer {layer.name!r} is not fed by the previous layer (non-sequential model)")
            prev_output = layer.output
            if kind == "Masking":
                t = self.masking(layer, t)
            elif kind == "Embedding":
                t = self.embedding(layer, t)
            elif kind == "GRU":
                t = self.gru(layer, t)
            elif kind == "Bidirectional":
                t = self.bidirectional(layer, t)
            elif kind == "GlobalAveragePooling1D":
                t = self.pooling(layer, t, "avg")
            elif kind == "GlobalMaxPooling1D":
                t = self.pooling(layer, t, "max")
            elif kind == "Dense":
                t = self.dense(layer, t)
            elif kind in _IDENTITY_LAYERS:
                continue
            else:
                raise UnsupportedModelError(f"layer {layer.name!r} of type {kind} has no native ONNX mapping")
        if t.layout != "bf":
            raise UnsupportedModelError("the model output must be (batch, 1)")
        self.g.nodes.append(helper.make_node("Identity", [t.name], [OUTPUT_NAME], name="output"))
        self.g.outputs.insert(0, helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1]))
        graph = helper.make_graph(self.g.nodes, "gru_classifier", self.g.inputs, self.g.outputs, self.g.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="pipeline.export.native")
        proto.ir_version = min(proto.ir_version, 8)
        onnx.checker.check_model(proto, full_check=True)
        return proto


def export_native(model, input_name: str, opset: int, stateful: bool = False) -> onnx.ModelProto:
    """Emit the ONNX graph of ``model`` with native GRU ops.

    Args:
        model: a built Keras model (linear chain of supported layers).
        input_name: graph input name.
        opset: ONNX opset (13-17).
        stateful: also expose each GRU's hidden state as inputs ``h_in_i`` (D, batch, H) and
            outputs ``h_out_i``, and an average pooling's running mean and step count as
            ``avg_mean_in``/``avg_count_in`` -> ``avg_mean_out``/``avg_count_out`` (the streaming
            graph). Masks are ignored there: chunks are unpadded.
    Raises:
        UnsupportedModelError: a layer or setting cannot be expressed exactly.
    """
    if stateful:
        reason = stream_support(model)
        if reason:
            raise UnsupportedModelError(f"cannot build a streaming graph: {reason}")
    return _Emitter(model, stateful).emit(input_name, opset)
