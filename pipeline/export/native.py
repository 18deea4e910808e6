"""Native ONNX export: Keras GRU layers become the ONNX ``GRU`` op (``model.onnx`` and ``stream.onnx``).

Owns: emitting the ONNX graph equivalent to a Keras model (layer order from pipeline.export.walk), mapping
GRU (and Bidirectional GRU) onto the native op instead of the ``Loop`` that tf2onnx produces for
Keras 3; the streaming variant of that graph (``stateful=True``) with the GRU hidden states and the
average pooling's running mean as explicit inputs and outputs; ``stream_support``, which says
whether a model can stream.
Imports: numpy, onnx, pipeline.export (graph, base, activations, layers, walk; unrolled lazily); reads Keras layer objects and imports
keras only lazily, for the backend epsilon of Normalization (build stage only). Reads: the model's
weights. Writes: nothing (returns a ModelProto).

Each Keras layer kind is emitted by one small function, found in ``LAYER_EMITTERS`` by the layer's
class name. The batch graph and the stream graph differ only in the hooks of ``_Emitter``
(batch) and ``_StreamEmitter`` (stream): masks, initial and final GRU states, average pooling.

Mapping (Keras -> ONNX GRU, gate order z, r, h in both), in ``_gru_node_params``:
    W = kernel.T            (3H, F)        per direction, stacked (D, 3H, F)
    R = recurrent_kernel.T  (3H, H)        (D, 3H, H)
    B = [input bias, recurrent bias]  (6H,)  reset_after=False puts zeros in the recurrent half
    reset_after=True  <-> linear_before_reset=1
    Masking / Embedding(mask_zero) over right-padded rows <-> sequence_lens (count of unmasked steps);
        on padded steps the graph reproduces Keras' returned values (last real output repeated for a
        plain GRU, zeros inside Bidirectional and for go_backwards) so mask-blind layers such as
        GlobalMaxPooling1D see the same numbers as in Keras
    go_backwards <-> direction="reverse"; Bidirectional <-> direction="bidirectional"
Normalization (Keras 3, statistics per feature (axis=-1) or global (axis=None), i.e. constant over batch
and time) becomes Sub + Div by the constant max(sqrt(variance), epsilon), or Mul + Add for invert=True.
It passes the mask on like Keras; a Masking layer after it masks the steps whose *normalized* values all
equal the mask value, as in Keras.
The op is time-major (layout=0): the graph transposes once at the input and keeps the time-major
layout between stacked GRUs.

Supported layers (the keys of ``LAYER_EMITTERS``): Masking, Normalization, Embedding, GRU (every Keras
activation: on the op where its list matches, else written step by step through pipeline.export.unrolled),
Bidirectional(GRU) (any merge_mode, None included), Dropout-like layers (identity at inference),
GlobalAveragePooling1D, GlobalMaxPooling1D, Dense (2-D or per step, every activation of
pipeline.export.activations), and the layers of pipeline.export.layers (front-ends, normalization, merges)
and pipeline.export.attention; InputLayer is skipped. pipeline.export.walk decides the order (a chain, or
a Functional graph with branches). Anything else raises ``UnsupportedModelError`` (``UnknownLayerError``
for a class with no emitter) naming the layer, so the caller can fall back to tf2onnx.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

# the output names are declared once, in the artifact contract (the runtime reads them there too)
from pipeline.artifact import OUTPUT_NAME, OUTPUTS_NAME, output_name
from pipeline.export.activations import RNN_ACTIVATIONS, SUPPORTED, activation_key, emit_activation
from pipeline.export.base import UnknownLayerError, UnsupportedModelError, _int64, _Tensor
from pipeline.export.graph import GraphBuilder
from pipeline.export.layers import EMITTERS as LAYERS
from pipeline.export.layers import SEQUENCE_MIXERS
from pipeline.export.walk import walk

__all__ = ["UnsupportedModelError", "UnknownLayerError", "export_native", "stream_support", "output_name", "OUTPUT_NAME",
           "OUTPUTS_NAME", "LAYER_EMITTERS"]

_DENSE_ACTIVATIONS = SUPPORTED  # pipeline.export.activations writes each one
_IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                    "ActivityRegularization")


def _activation_name(fn) -> str:
    return activation_key(fn)


def _keras_only_activations(gru) -> list[str]:
    """The activations of ``gru`` that the ONNX GRU op does not have (they need the per-step graph)."""
    keys = [_activation_name(gru.cell.recurrent_activation), _activation_name(gru.cell.activation)]
    return [k for k in keys if k not in RNN_ACTIVATIONS]


# ---------------------------------------------------------------------------- streamability

def stream_support(model) -> Optional[str]:
    """None when the model can be streamed step by step, else the reason it cannot."""
    normalized = False
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Masking" and normalized:
            # Stream chunks are never padded: the graph ignores masks because the runtime refuses raw
            # steps equal to the mask value. A step whose *normalized* values equal it is not refused,
            # yet Keras would skip it.
            return ("a Masking layer after Normalization masks steps by their normalized values, which the stream "
                    "(unpadded chunks, only raw steps checked against the mask value) cannot honour")
        normalized = normalized or kind == "Normalization"
        if kind == "Bidirectional":
            return "a Bidirectional GRU needs the whole sequence (its backward pass starts at the end)"
        grus = [layer] if kind == "GRU" else [layer.forward_layer] if kind == "Bidirectional" else []
        if grus and _keras_only_activations(grus[0]):
            return (f"GRU activation {_keras_only_activations(grus[0])[0]} has no ONNX GRU equivalent, so the GRU is "
                    "written step by step for the model's fixed number of timesteps")
        if kind == "GRU" and layer.go_backwards:
            return "a go_backwards GRU needs the whole sequence (it starts at the end)"
        if kind == "GlobalMaxPooling1D":
            return "max pooling over time needs the whole sequence"
        if kind in SEQUENCE_MIXERS:
            return (f"layer {layer.name!r} ({kind}) reads neighbouring steps or merges branches; the stream graph "
                    "carries only GRU states and a running mean")
        if kind == "GRU" and not layer.return_sequences and layer is not _last_rnn(model):
            return "only the last GRU may drop the sequence axis"
    return None


def _last_rnn(model):
    rnns = [layer for layer in model.layers if type(layer).__name__ in ("GRU", "Bidirectional")]
    return rnns[-1] if rnns else None


# ---------------------------------------------------------------------------- batch / stream hooks

class _Emitter:
    """The graph being emitted, and the hooks where the batch graph (this class) and the stream
    graph (``_StreamEmitter``) differ. Batch: masks are honoured, GRUs start from zeros and
    expose no state, average pooling is a (masked) mean over the whole sequence."""

    def __init__(self) -> None:
        self.g = GraphBuilder()

    def padding(self, t: _Tensor) -> tuple[Optional[str], Optional[str]]:
        """(lengths (B,), mask (T, B, 1)) of the padded steps the GRUs must honour, or Nones."""
        return t.lengths, t.mask_tb1

    def initial_h(self, D: int, H: int) -> str:
        """The GRU's initial_h input (D, B, H); "" starts from zeros."""
        return ""

    def final_h(self, Y_h: str, D: int, H: int) -> None:
        """Called with each GRU's last hidden state Y_h (D, B, H)."""

    def average(self, layer, t: _Tensor, axis: int) -> _Tensor:
        """GlobalAveragePooling1D over the time ``axis`` of a checked 3-D sequence: (B, H)."""
        g = self.g
        if t.mask_tb1 is None:
            return _Tensor(g.op1("ReduceMean", [t.name], "avg", axes=[axis], keepdims=0), "bf")
        masked = g.op1("Mul", [t.name, t.mask_tb1], "masked")  # (T, B, H)
        total = g.op1("ReduceSum", [masked, g.const("axis0", _int64(0))], "sum", keepdims=0)  # (B, H)
        count = g.op1("ReduceSum", [t.mask_tb1, g.const("axis0", _int64(0))], "count", keepdims=0)  # (B, 1)
        return _Tensor(g.op1("Div", [total, count], "avg"), "bf")  # (B, H)


class _StreamEmitter(_Emitter):
    """Stream graph: each GRU's hidden state is an input ``h_in_i`` (D, batch, H) and an output
    ``h_out_i``; average pooling carries its running mean and step count as ``avg_mean_in`` /
    ``avg_count_in`` -> ``avg_mean_out`` / ``avg_count_out``. Chunks are never padded, so masks
    are ignored."""

    def __init__(self) -> None:
        super().__init__()
        self._gru_states = 0

    def padding(self, t: _Tensor) -> tuple[Optional[str], Optional[str]]:
        return None, None

    def initial_h(self, D: int, H: int) -> str:
        return self.g.add_input(f"h_in_{self._gru_states}", TensorProto.FLOAT, [D, "batch", H])

    def final_h(self, Y_h: str, D: int, H: int) -> None:
        g = self.g
        h_out = f"h_out_{self._gru_states}"
        g.node("Identity", [Y_h], [h_out], node_name=g.name("state_out"))
        g.add_output(h_out, TensorProto.FLOAT, [D, "batch", H])
        self._gru_states += 1

    def average(self, layer, t: _Tensor, axis: int) -> _Tensor:
        """Mean over every step seen so far, carried across chunks as (mean, step count) states.

        mean_out = (mean_in * count_in + sum of this chunk's outputs) / (count_in + chunk steps), so a
        stream of chunks ends on the mean of the whole sequence (up to float32 summation order). The
        mean, not the sum, is carried so the state stays on the scale of a hidden state.
        """
        g = self.g
        if t.layout != "tbf":  # the one streaming check for average pooling (stream_support leaves it here)
            raise UnsupportedModelError("average pooling streams only right after a GRU")
        H = int(layer.output.shape[-1])  # (B, H) out of the pooling
        mean_in = g.add_input("avg_mean_in", TensorProto.FLOAT, [1, "batch", H])
        count_in = g.add_input("avg_count_in", TensorProto.FLOAT, [1, "batch", 1])
        axis0 = g.const("axis0", _int64(0))
        chunk_sum = g.op1("ReduceSum", [t.name, axis0], "chunk_sum", keepdims=1)  # (1, B, H)
        T = g.op1("Gather", [g.op1("Shape", [t.name], "seq_shape"), axis0], "chunk_steps", axis=0)  # (1,) int64
        steps = g.op1("Cast", [T], "steps", to=TensorProto.FLOAT)  # (1,)
        total = g.op1("Add", [g.op1("Mul", [mean_in, count_in], "sum_in"), chunk_sum], "sum_total")  # (1, B, H)
        # The state outputs are written by the nodes themselves (no Identity: each node costs per push).
        count, mean = "avg_count_out", "avg_mean_out"
        g.node("Add", [count_in, steps], [count])  # (1, B, 1)
        g.node("Div", [total, count], [mean])  # (1, B, H)
        g.add_output(mean, TensorProto.FLOAT, [1, "batch", H])
        g.add_output(count, TensorProto.FLOAT, [1, "batch", 1])
        return _Tensor(g.op1("Squeeze", [mean, axis0], "avg_bh"), "bf")  # (B, H)


# ---------------------------------------------------------------------------- shared pieces

def _with_mask(g: GraphBuilder, t: _Tensor, mask_bt_bool: str) -> _Tensor:
    """``t`` with lengths (B,) and a (T, B, 1) float mask derived from a (B, T) boolean mask."""
    mask_bt = g.op1("Cast", [mask_bt_bool], "mask_f", to=TensorProto.FLOAT)  # (B, T)
    lengths_f = g.op1("ReduceSum", [mask_bt, g.const("axis1", _int64(1))], "len_f", keepdims=0)  # (B,)
    t.lengths = g.op1("Cast", [lengths_f], "lengths", to=TensorProto.INT32)  # (B,)
    mask_tb = g.op1("Transpose", [mask_bt], "mask_tb", perm=[1, 0])  # (T, B)
    t.mask_tb1 = g.op1("Unsqueeze", [mask_tb, g.const("axis2", _int64(2))], "mask_tb1")  # (T, B, 1)
    return t


def _carry_last(g: GraphBuilder, seq: str, last: str, mask_tb1: str) -> str:
    """Keras (zero_output_for_mask=False) repeats the last real output on masked steps; ONNX
    writes zeros there. Only visible to layers that ignore the mask (GlobalMaxPooling1D)."""
    real = g.op1("Cast", [mask_tb1], "real_tb1", to=TensorProto.BOOL)  # (T, B, 1)
    return g.op1("Where", [real, seq, last], "y_carried")  # (T, B, H); `last` (B, H) broadcasts


def _merge(g: GraphBuilder, a: str, b: str, mode: str, axis: int) -> str:
    """Bidirectional's merge of the forward and backward outputs ``a`` and ``b``."""
    if mode == "concat":
        return g.op1("Concat", [a, b], "merged", axis=axis)
    if mode == "sum":
        return g.op1("Add", [a, b], "merged")
    if mode == "mul":
        return g.op1("Mul", [a, b], "merged")
    if mode == "ave":
        return g.op1("Mul", [g.op1("Add", [a, b], "sum"), g.const("half", np.array(0.5, np.float32))], "merged")
    raise UnsupportedModelError(f"Bidirectional merge_mode {mode!r} is not supported")


def _check_gru(gru) -> None:
    kind = type(gru).__name__
    if kind != "GRU":
        raise UnsupportedModelError(f"recurrent layer {kind} is not a GRU")
    if type(gru.cell).__name__ != "GRUCell":
        raise UnsupportedModelError(f"GRU with a custom cell {type(gru.cell).__name__}")
    if gru.stateful:
        raise UnsupportedModelError("stateful=True GRU layers are not supported")
    if gru.cell.reset_after not in (True, False):
        raise UnsupportedModelError("unknown reset_after")


def _gru_node_params(grus) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The Keras -> ONNX GRU mapping for one node of D = len(grus) directions:
    W (D, 3H, F), R (D, 3H, H), B (D, 6H) and the node's attributes."""
    Ws, Rs, Bs = [], [], []
    acts, alphas, betas = [], [], []
    for gru in grus:
        cell = gru.cell
        H = cell.units
        Ws.append(np.asarray(cell.kernel.numpy(), dtype=np.float32).T)              # (3H, F)
        Rs.append(np.asarray(cell.recurrent_kernel.numpy(), dtype=np.float32).T)    # (3H, H)
        if cell.use_bias:
            b = np.asarray(cell.bias.numpy(), dtype=np.float32)  # (2, 3H) reset_after, else (3H,)
            Bs.append(b.reshape(-1) if cell.reset_after else np.concatenate([b, np.zeros(3 * H, np.float32)]))
        else:
            Bs.append(np.zeros(6 * H, dtype=np.float32))
        for fn in (cell.recurrent_activation, cell.activation):  # f (gates), then g (candidate)
            key = _activation_name(fn)
            if key in RNN_ACTIVATIONS:
                op, alpha, beta = RNN_ACTIVATIONS[key]
            elif key in SUPPORTED:  # not in the op's list: a placeholder that _emit unrolls step by step
                op, alpha, beta = f"keras:{key}", None, None
            else:
                raise UnsupportedModelError(
                    f"GRU layer {gru.name!r}: activation {key!r} has no ONNX form; supported: {sorted(SUPPORTED)}")
            acts.append(op)
            if alpha is not None:
                alphas.append(alpha)
            if beta is not None:
                betas.append(beta)
    attrs = {"activations": acts, "hidden_size": grus[0].cell.units,
             "linear_before_reset": int(grus[0].cell.reset_after)}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return np.stack(Ws), np.stack(Rs), np.stack(Bs), attrs


def _gru_node(e: _Emitter, t: _Tensor, grus, direction: str) -> tuple[str, str]:
    """Emit one GRU node over the sequence ``t``; returns (Y (T, D, B, H), Y_h (D, B, H))."""
    g = e.g
    x = t.name
    if t.layout == "btf":
        x = g.op1("Transpose", [x], "x_tbf", perm=[1, 0, 2])  # (T, B, F)
    elif t.layout != "tbf":
        raise UnsupportedModelError("a GRU must receive a 3-D sequence")
    W, R, B, attrs = _gru_node_params(grus)
    D, H = len(grus), grus[0].cell.units
    lengths, _ = e.padding(t)
    keras_only = [a[len("keras:"):] for a in attrs["activations"] if a.startswith("keras:")]
    if keras_only and lengths:
        raise UnsupportedModelError(f"GRU layer {grus[0].name!r}: activation {keras_only[0]} has no ONNX GRU "
                                    "equivalent and its per-step graph cannot honour a mask (sequence lengths)")
    inputs = [x, g.const("W", W), g.const("R", R), g.const("B", B), lengths or ""]
    inputs.append(e.initial_h(D, H))
    while inputs[-1] == "":  # optional inputs left out at the end
        inputs.pop()
    Y, Y_h = g.op("GRU", inputs, "gru", n_out=2, direction=direction, **attrs)
    if lengths:
        Y_h = _last_valid_states(g, Y, lengths, direction)
    e.final_h(Y_h, D, H)
    return Y, Y_h


def _last_valid_states(g, Y: str, lengths: str, direction: str) -> str:
    """Each direction's last state read from Y (T, D, B, H) at the row's own end: (D, B, H).

    Equals the GRU's own Y_h bit for bit in onnxruntime. OpenVINO (2026.4) returns a wrong Y_h for
    rows shorter than a dynamic time axis while its Y is right, so the graph never relies on Y_h
    when ``sequence_lens`` is set: forward states come from step ``length - 1``, reverse ones from step 0.
    """
    dirs = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}[direction]
    ends = g.op1("Cast", [g.op1("Sub", [lengths, g.const("one_i32", np.array(1, np.int32))], "len_m1")],
                 "end_idx", to=TensorProto.INT64)  # (B,)
    ends_b1 = g.op1("Unsqueeze", [ends, g.const("axis1", _int64(1))], "end_b1")  # (B, 1)
    parts = []
    for d, name in enumerate(dirs):
        y_d = g.op1("Gather", [Y, g.const("dir", np.array(d, np.int64))], "y_dir", axis=1)  # (T, B, H)
        if name == "forward":
            y_bth = g.op1("Transpose", [y_d], "y_bth", perm=[1, 0, 2])  # (B, T, H)
            last = g.op1("GatherND", [y_bth, ends_b1], "h_end", batch_dims=1)  # (B, H)
        else:
            last = g.op1("Gather", [y_d, g.const("step0", np.array(0, np.int64))], "h_first", axis=0)  # (B, H)
        parts.append(g.op1("Unsqueeze", [last, g.const("axis0", _int64(0))], "h_dir"))  # (1, B, H)
    return parts[0] if len(parts) == 1 else g.op1("Concat", parts, "y_h", axis=0)  # (D, B, H)


def _pooling_axis(layer, t: _Tensor) -> int:
    """The time axis of the 3-D sequence a global pooling layer reduces, after checking the layer."""
    if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "keepdims", False):
        raise UnsupportedModelError("pooling must be channels_last without keepdims")
    if t.layout not in ("btf", "tbf"):
        raise UnsupportedModelError("pooling needs a 3-D sequence")
    if t.layout == "btf" and t.mask_tb1 is not None:
        raise UnsupportedModelError("masked pooling directly on the input")
    return 1 if t.layout == "btf" else 0


# ---------------------------------------------------------------------------- one function per layer kind

def _masking(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    # On the model input, or on a (batch, time, features) tensor computed from it (a Normalization):
    # the mask is computed from the values Masking receives, exactly as in Keras.
    if t.layout != "btf":
        raise UnsupportedModelError("Masking is supported only before the first GRU, on the (batch, time, features) "
                                    "model input or its Normalization")
    g = e.g
    mv = g.const("mask_value", np.array(float(layer.mask_value), dtype=np.float32))
    eq = g.op1("Equal", [t.name, mv], "eq")
    neq = g.op1("Not", [eq], "neq")  # (B, T, F)
    neq_f = g.op1("Cast", [neq], "neq_f", to=TensorProto.FLOAT)
    any_f = g.op1("ReduceMax", [neq_f], "any_f", axes=[2], keepdims=0)  # (B, T)
    any_b = g.op1("Cast", [any_f], "any_b", to=TensorProto.BOOL)
    return _with_mask(g, _Tensor(t.name, t.layout), any_b)


def _normalization(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    """Keras 3 Normalization: (x - mean) / max(sqrt(variance), epsilon); invert=True: mean + x * max(...).

    The statistics are the tensors Keras' ``call`` uses (``layer.mean``/``layer.variance``, shaped to
    broadcast over the input), and must be constant over batch and time: axis=-1 (per feature) or
    axis=None (one scalar). The mask, if any, passes through unchanged.
    """
    from keras import config as keras_config  # the backend epsilon Keras' call reads

    name, kind = layer.name, type(layer).__name__
    if t.layout not in ("btf", "tbf", "bf"):
        raise UnsupportedModelError(f"{kind} layer {name!r} on token ids: expected float features")
    if layer.compute_dtype != "float32":
        raise UnsupportedModelError(f"{kind} layer {name!r} computes in {layer.compute_dtype}, expected float32")
    ndim = len(layer.input.shape)
    kept = tuple(sorted(a % ndim for a in layer.axis))  # () for axis=None
    if kept not in ((), (ndim - 1,)):
        raise UnsupportedModelError(
            f"{kind} layer {name!r} with axis={layer.axis[0] if len(layer.axis) == 1 else layer.axis}: expected "
            "axis=-1 (per-feature statistics) or axis=None; other axes give statistics that vary over batch or time")
    if layer.mean is None or layer.variance is None:
        raise UnsupportedModelError(f"{kind} layer {name!r} is not built (no mean/variance)")
    width = int(layer.input.shape[-1]) if kept else 1
    mean = np.asarray(layer.mean, dtype=np.float32).reshape(-1)  # (F,) or (1,); broadcasts over (..., F)
    variance = np.asarray(layer.variance, dtype=np.float32).reshape(-1)
    if mean.shape != (width,) or variance.shape != (width,):
        raise UnsupportedModelError(f"{kind} layer {name!r}: expected mean and variance of {width} value(s), got "
                                    f"shapes {np.shape(layer.mean)} and {np.shape(layer.variance)}")
    if not (np.isfinite(mean).all() and np.isfinite(variance).all() and (variance >= 0).all()):
        raise UnsupportedModelError(f"{kind} layer {name!r}: expected finite mean and non-negative finite variance "
                                    "(Keras would output NaN)")
    # Same float32 operations as Keras: sqrt, then maximum with the backend epsilon.
    scale = np.maximum(np.sqrt(variance), np.float32(keras_config.epsilon())).astype(np.float32)  # (F,)
    g = e.g
    if layer.invert:
        out = g.op1("Add", [g.const("norm_mean", mean), g.op1("Mul", [t.name, g.const("norm_scale", scale)],
                                                               "scaled")], "denormalized")
    else:
        out = g.op1("Div", [g.op1("Sub", [t.name, g.const("norm_mean", mean)], "centered"),
                            g.const("norm_scale", scale)], "normalized")
    return _Tensor(out, t.layout, t.lengths, t.mask_tb1)  # same shape as the input


def _embedding(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    g = e.g
    table = g.const("embeddings", np.asarray(layer.embeddings.numpy(), dtype=np.float32))  # (V, E)
    ids = g.op1("Cast", [t.name], "ids", to=TensorProto.INT64)  # (B, T)
    out = _Tensor(g.op1("Gather", [table, ids], "embedded", axis=0), "btf")  # (B, T, E)
    if layer.mask_zero:
        zero = g.const("zero_id", np.array(0, dtype=np.int64))
        nz = g.op1("Not", [g.op1("Equal", [ids, zero], "is_pad")], "not_pad")  # (B, T)
        out = _with_mask(g, out, nz)
    return out


def _gru(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    _check_gru(layer)
    g = e.g
    Y, Y_h = _gru_node(e, t, [layer], "reverse" if layer.go_backwards else "forward")
    last = g.op1("Squeeze", [Y_h, g.const("axis0", _int64(0))], "h_last")  # (B, H)
    if getattr(layer, "return_state", False):  # (output, state): the graph walk gives each its Keras tensor
        if t.lengths is not None:
            raise UnsupportedModelError(f"GRU layer {layer.name!r} with return_state=True on a masked sequence")
        layer_out = _gru_output(e, layer, t, Y, last)
        return [layer_out, _Tensor(last, "bf")]
    return _gru_output(e, layer, t, Y, last)


def _gru_output(e: _Emitter, layer, t: _Tensor, Y: str, last: str) -> _Tensor:
    g = e.g
    if not layer.return_sequences:
        return _Tensor(last, "bf")
    seq = g.op1("Squeeze", [Y, g.const("axis1", _int64(1))], "y_tbh")  # (T, B, H)
    _, mask_tb1 = e.padding(t)
    if layer.go_backwards:
        # Keras returns the outputs in processing (reversed) order. Over right-padded masked rows
        # that order starts with T - L steps holding the initial state (zeros) and ends with the
        # real steps, while the *unreversed* mask is passed on; the full-time reversal of the ONNX
        # output (zeros past each row's length) reproduces exactly that.
        seq = g.op1("Slice", [seq, g.const("start", _int64(-1)), g.const("end", _int64(np.iinfo(np.int64).min)),
                              g.const("axes", _int64(0)), g.const("step", _int64(-1))], "y_rev")  # (T, B, H)
    elif mask_tb1 is not None and not getattr(layer, "zero_output_for_mask", False):
        seq = _carry_last(g, seq, last, mask_tb1)
    return _Tensor(seq, "tbf", t.lengths, t.mask_tb1)


def _bidirectional(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    fw, bw = layer.forward_layer, layer.backward_layer
    _check_gru(fw)
    _check_gru(bw)
    if fw.go_backwards or not bw.go_backwards:
        raise UnsupportedModelError("Bidirectional with a go_backwards forward layer")
    if fw.cell.reset_after != bw.cell.reset_after or fw.return_sequences != bw.return_sequences:
        raise UnsupportedModelError("Bidirectional with differently configured directions")
    if layer.merge_mode is None and t.lengths is not None:
        raise UnsupportedModelError(f"Bidirectional layer {layer.name!r} with merge_mode=None on a masked sequence")
    if getattr(layer, "return_state", False):
        raise UnsupportedModelError(f"Bidirectional layer {layer.name!r} with return_state=True")
    g = e.g
    Y, Y_h = _gru_node(e, t, [fw, bw], "bidirectional")
    if not layer.return_sequences:
        h_f, h_b = g.op("Split", [Y_h], "h_dir", n_out=2, axis=0)  # (1, B, H) each
        ax = g.const("axis0", _int64(0))
        h_f, h_b = g.op1("Squeeze", [h_f, ax]), g.op1("Squeeze", [h_b, ax])  # (B, H) each
        if layer.merge_mode is None:  # two outputs: the graph walk gives each its Keras tensor
            return [_Tensor(h_f, "bf"), _Tensor(h_b, "bf")]
        return _Tensor(_merge(g, h_f, h_b, layer.merge_mode, axis=1), "bf")
    y_f, y_b = g.op("Split", [Y], "y_dir", n_out=2, axis=1)  # (T, 1, B, H) each
    ax = g.const("axis1", _int64(1))
    y_f, y_b = g.op1("Squeeze", [y_f, ax]), g.op1("Squeeze", [y_b, ax])  # (T, B, H) each
    # Bidirectional forces zero_output_for_mask=True on its layers when returning sequences,
    # which matches ONNX's zeros past each length; honour a layer that was changed back.
    # The backward layer's masked steps hold its initial state (zeros) either way.
    _, mask_tb1 = e.padding(t)
    if mask_tb1 is not None and not getattr(fw, "zero_output_for_mask", True):
        h_f_last = g.op1("Squeeze", [g.op("Split", [Y_h], "h_dir", n_out=2, axis=0)[0],
                                     g.const("axis0", _int64(0))], "h_f_last")  # (B, H)
        y_f = _carry_last(g, y_f, h_f_last, mask_tb1)
    if layer.merge_mode is None:
        return [_Tensor(y_f, "tbf"), _Tensor(y_b, "tbf")]
    merged = _merge(g, y_f, y_b, layer.merge_mode, axis=2)  # (T, B, H or 2H)
    return _Tensor(merged, "tbf", t.lengths, t.mask_tb1)


def _average_pooling(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    return e.average(layer, t, _pooling_axis(layer, t))


def _max_pooling(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    # Keras 3 GlobalMaxPooling1D ignores the mask and takes the max over every step, padded ones
    # included; the GRU emitters reproduce Keras' values on padded steps, so a plain max is exact.
    axis = _pooling_axis(layer, t)
    return _Tensor(e.g.op1("ReduceMax", [t.name], "max", axes=[axis], keepdims=0), "bf")  # (B, H)


def _dense(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    """Dense on (B, F) (Gemm), or on each step of a 3-D sequence (MatMul + Add; the mask passes through)."""
    g = e.g
    act = _activation_name(layer.activation)
    if act not in _DENSE_ACTIVATIONS:
        raise UnsupportedModelError(f"Dense layer {layer.name!r}: activation {act!r} is not supported; supported: "
                                    f"{', '.join(_DENSE_ACTIVATIONS)}")
    W = np.asarray(layer.kernel.numpy(), dtype=np.float32)  # (F, U)
    if t.layout == "bf":
        ins = [t.name, g.const("dense_W", W)]  # (B, F), (F, U)
        if layer.use_bias:
            ins.append(g.const("dense_b", np.asarray(layer.bias.numpy(), dtype=np.float32)))  # (U,)
        out = g.op1("Gemm", ins, "dense")  # (B, U)
    elif t.layout in ("btf", "tbf"):
        out = g.op1("MatMul", [t.name, g.const("dense_W", W)], "dense")  # (B, T, U) or (T, B, U)
        if layer.use_bias:
            out = g.op1("Add", [out, g.const("dense_b", np.asarray(layer.bias.numpy(), dtype=np.float32))], "dense_b")
    else:
        raise UnsupportedModelError(f"Dense layer {layer.name!r} on token ids: expected float features")
    out = emit_activation(g, act, out, act)
    return _Tensor(out, t.layout, t.lengths, t.mask_tb1)


def _identity(e: _Emitter, layer, t: _Tensor) -> _Tensor:
    return t  # Dropout-like layers do nothing at inference


# Keras layer class name -> the function that emits it.
LAYER_EMITTERS: dict[str, Callable[[_Emitter, object, _Tensor], _Tensor]] = {
    "Masking": _masking,
    "Normalization": _normalization,
    "Embedding": _embedding,
    "GRU": _gru,
    "Bidirectional": _bidirectional,
    "GlobalAveragePooling1D": _average_pooling,
    "GlobalMaxPooling1D": _max_pooling,
    "Dense": _dense,
    **{kind: _identity for kind in _IDENTITY_LAYERS},
    **LAYERS,
}


# ---------------------------------------------------------------------------- model

def _emit(e: _Emitter, model, input_name: str, opset: int) -> onnx.ModelProto:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError("models with several inputs or outputs")
    g = e.g
    in_shape = tuple(model.inputs[0].shape)  # (None, T or None, F), or (None, T or None) for token ids
    token_input = len(in_shape) == 2
    dims = ["batch", "time" if in_shape[1] is None else int(in_shape[1])]
    if not token_input:
        dims.append(int(in_shape[2]))
    g.add_input(input_name, TensorProto.INT64 if token_input else TensorProto.FLOAT, dims)
    width = int(model.outputs[0].shape[-1])  # 1: p(class 1); k: k probabilities
    out_name = output_name(width)
    g.add_output(out_name, TensorProto.FLOAT, ["batch", width])  # first output; states follow
    t = _Tensor(input_name, "bt" if token_input else "btf")
    t = walk(e, model, t, LAYER_EMITTERS)
    if t.layout != "bf":
        raise UnsupportedModelError("the model output must be (batch, classes)")
    g.node("Identity", [t.name], [out_name], node_name="output")  # (B, 1) or (B, k)
    proto = helper.make_model(g.make_graph("gru_classifier"), opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pipeline.export.native")
    proto.ir_version = min(proto.ir_version, 8)
    if any(a.startswith(b"keras:") for n in proto.graph.node if n.op_type == "GRU"
           for att in n.attribute if att.name == "activations" for a in att.strings):
        # A GRU activation the op does not have: every GRU written step by step (pipeline.export.unrolled).
        if dims[1] == "time":
            raise UnsupportedModelError("a GRU activation the ONNX GRU op does not have needs a fixed number of "
                                        "timesteps (the model's input has a variable time axis)")
        from pipeline.export.unrolled import unroll_grus

        proto = unroll_grus(proto, int(dims[1]))
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
    return _emit(_StreamEmitter() if stateful else _Emitter(), model, input_name, opset)
