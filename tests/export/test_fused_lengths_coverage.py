"""Variable-length graphs the exporter writes, on the fused kernel (issue 26): the last-state head (each row's
state at its own end; a reverse direction's at step 0), reverse (go_backwards) and Bidirectional layers with
every merge, stacked, max pooling over the padded sequence (Y's zeros past a row's length, or Keras' last output
carried there), k-way heads and Dense layers before the classifier.

Each case is a tiny Keras model behind Masking(-1) with random weights (``randomize_weights`` of
tests/coverage_cases.py), exported as gru-export ships a variable-length model (``export_native``, then
``embed_preprocessing`` with the lengths input). For every ISA variant and thread count, the kernel's
``run_lengths`` gives plain onnxruntime's bits on model.onnx fed x and lengths, on batches with real zeros,
lengths 1 and T, a block whose lengths all differ and N not a multiple of the block size
(``fused_support.padded_batches``); the Predictor runs it; damaged graphs are refused with a reason.
Token models with lengths (``Embedding(mask_zero=True)``, ``TOKEN_CASES``): folded and gathered, the same bits,
with id 0 and ids outside the table past the lengths; graphs whose sequence lengths or masks are not the
nonzero ids before the lengths are refused; the Predictor runs them, refuses id 0 before a length, and with a
manifest that lets one through answers as model.onnx. The TF-free side (numpy specs, run under the sanitizers):
tests/runtime/test_fused_lengths_heads.py and test_fused_tokens_tanh.py.

Needs Keras (the build extra) to make the models; the kernel side imports none of it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402
import onnx  # noqa: E402

from pipeline.export.native import export_native  # noqa: E402
from pipeline.export.scaling import embed_preprocessing  # noqa: E402
from pipeline.runtime import Predictor, fused  # noqa: E402
from pipeline.runtime.fused.onnx_reader import FusedSpec, OnnxReadError, match_fused, parse_model  # noqa: E402
from pipeline.runtime.sessions import open_session  # noqa: E402
from coverage_cases import randomize_weights  # noqa: E402  (tests/coverage_cases.py)

from fused_support import ISAS, LIB, needs_library, padded_batches, token_batches, write_folder  # noqa: E402

# Keras' GlobalMaxPooling1D ignores the mask (it says so in a UserWarning): the graph reproduces exactly that
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'global_max_pooling1d.*does not support masking:UserWarning")

F = 3
MASK_VALUE = -1.0  # the models' Masking value: zeros are data
OPSET = 17

# name -> (the layers after Masking, the head the spec must read, k, the classifier's activation); the
# layers are made by a function of the keras module
CASES = {
    "GRU last": (lambda k: [k.layers.GRU(20)], "last", 1, "sigmoid"),
    "GRU reset_after=False H=33 last": (lambda k: [k.layers.GRU(33, reset_after=False)], "last", 1, "sigmoid"),
    "go_backwards last": (lambda k: [k.layers.GRU(20, go_backwards=True)], "last", 1, "sigmoid"),
    "Bidirectional last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12))], "last", 1, "sigmoid"),
    "Bidirectional sum last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12), merge_mode="sum")], "last", 1,
                               "sigmoid"),
    "Bidirectional mul last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9), merge_mode="mul")], "last", 1,
                               "sigmoid"),
    "GRU avg": (lambda k: [k.layers.GRU(16, return_sequences=True), k.layers.GlobalAveragePooling1D()], "avg", 1,
                "sigmoid"),
    "go_backwards avg": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional avg": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12, return_sequences=True)),
                                     k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional ave avg": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12, return_sequences=True), merge_mode="ave"),
                                         k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "GRU max (last output carried)": (lambda k: [k.layers.GRU(24, return_sequences=True), k.layers.GlobalMaxPooling1D()],
                                      "max", 1, "sigmoid"),
    "GRU zero_output_for_mask max": (lambda k: [k.layers.GRU(8, return_sequences=True, zero_output_for_mask=True),
                                                k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "go_backwards max": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True)),
                                     k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional sum max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True), merge_mode="sum"),
                                         k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    # stacked: sequences handed on (go_backwards reversed in time, merged, concatenated)
    "go_backwards sequence + GRU last": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                                    k.layers.GRU(12)], "last", 1, "sigmoid"),
    "GRU sequence + go_backwards avg": (lambda k: [k.layers.GRU(10, return_sequences=True),
                                                   k.layers.GRU(12, go_backwards=True, return_sequences=True),
                                                   k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional mul sequence + GRU last": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(10, return_sequences=True), merge_mode="mul"), k.layers.GRU(12)], "last", 1,
        "sigmoid"),
    "Bidirectional ave sequence + reset_after=False Bidirectional sum avg": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True), merge_mode="ave"),
        k.layers.Bidirectional(k.layers.GRU(14, reset_after=False, return_sequences=True), merge_mode="sum"),
        k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "3 stacked mixed avg": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                       k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True)),
                                       k.layers.GRU(20, return_sequences=True), k.layers.GlobalAveragePooling1D()],
                            "avg", 1, "sigmoid"),
    "2 stacked Bidirectional ave max": (lambda k: [
        k.layers.Bidirectional(k.layers.GRU(5, return_sequences=True)),
        k.layers.Bidirectional(k.layers.GRU(17, return_sequences=True), merge_mode="ave"),
        k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional + go_backwards last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True)),
                                                     k.layers.GRU(7, go_backwards=True)], "last", 1, "sigmoid"),
    # Masking ahead of a Normalization: the graph pads the raw input (Where) before scaling it
    "Normalization + Bidirectional sum max": (lambda k: [
        k.layers.Normalization(mean=[0.5, -1.0, 0.2], variance=[4.0, 0.25, 1.0]),
        k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True), merge_mode="sum"),
        k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Normalization + GRU avg": (lambda k: [k.layers.Normalization(mean=[0.5, -1.0, 0.2], variance=[4.0, 0.25, 1.0]),
                                           k.layers.GRU(11, return_sequences=True), k.layers.GlobalAveragePooling1D()],
                                "avg", 1, "sigmoid"),
    # k-way heads and Dense layers before the classifier
    "softmax k=5 Bidirectional last": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12))], "last", 5, "softmax"),
    "softmax k=10 go_backwards avg": (lambda k: [k.layers.GRU(33, go_backwards=True, return_sequences=True),
                                                 k.layers.GlobalAveragePooling1D()], "avg", 10, "softmax"),
    "multilabel k=4 Bidirectional max": (lambda k: [k.layers.Bidirectional(k.layers.GRU(9, return_sequences=True)),
                                                    k.layers.GlobalMaxPooling1D()], "max", 4, "sigmoid"),
    "last + Dense(16, sigmoid) + Dense(8) softmax k=3": (lambda k: [
        k.layers.GRU(12, go_backwards=True), k.layers.Dense(16, activation="sigmoid"), k.layers.Dense(8)], "last", 3,
        "softmax"),
    "max + Dense(32, relu) binary": (lambda k: [k.layers.GRU(20, return_sequences=True), k.layers.GlobalMaxPooling1D(),
                                                k.layers.Dense(32, activation="relu")], "max", 1, "sigmoid"),
}


def _output(case: str) -> str:
    return "probability" if CASES[case][2] == 1 else "probabilities"


@lru_cache(maxsize=None)
def _model_bytes(case: str) -> bytes:
    """model.onnx of ``case`` as gru-export ships a variable-length model: x (batch, time, F) and lengths (batch,)
    -> Where(real, x, -1) -> Masking(-1) -> layers -> Dense(k, activation), random weights."""
    layers, _, k, activation = CASES[case]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, F), name="x")  # (batch, time, F)
    x = keras.layers.Masking(mask_value=MASK_VALUE)(inputs)
    for layer in layers(keras):
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(k, activation=activation)(x))  # (batch, k)
    randomize_weights(model, seed=sum(map(ord, case)))
    proto = embed_preprocessing(export_native(model, "x", OPSET), {"type": "none"}, masking=True, pad_value=MASK_VALUE)
    return proto.SerializeToString()


def _spec(case: str) -> FusedSpec:
    spec, why = match_fused(parse_model(_model_bytes(case)), "x", _output(case), "lengths")
    assert spec is not None, f"{case}: {why}"
    return spec


def test_the_cases_are_what_they_claim():
    for case, (_, head, k, activation) in CASES.items():
        spec = _spec(case)
        assert spec.lengths and (spec.head, spec.outputs, spec.activation) == (head, k, activation), case
        assert spec.max_reads_zeros == (head == "max" and case != "GRU max (last output carried)"
                                        and not case.startswith("max + Dense")), case
    assert [(la.direction, la.flip) for la in _spec("go_backwards avg").layers] == [("reverse", (True,))]
    assert [(la.direction, la.flip) for la in _spec("go_backwards last").layers] == [("reverse", (False,))]
    assert [(la.direction, la.merge) for la in _spec("Bidirectional ave sequence + reset_after=False Bidirectional "
                                                     "sum avg").layers] == [("bidirectional", "ave"),
                                                                            ("bidirectional", "sum")]
    assert [(la.direction, la.flip) for la in _spec("3 stacked mixed avg").layers] == [
        ("reverse", (True,)), ("bidirectional", (False, False)), ("forward", (False,))]
    assert [act for _, _, act in _spec("last + Dense(16, sigmoid) + Dense(8) softmax k=3").dense] == ["sigmoid", "linear"]
    for case in ("Normalization + Bidirectional sum max", "Normalization + GRU avg"):  # the Where ahead of the scaling
        assert [op for op, _ in _spec(case).prefix] == ["Sub", "Div"], case


@needs_library
@pytest.mark.parametrize("case", list(CASES))
def test_run_lengths_is_model_onnx_bit_for_bit(case):
    """Every ISA variant and thread count: plain onnxruntime's bits on model.onnx fed x and lengths."""
    data = _model_bytes(case)
    sess = open_session(data, name=case)
    rng = np.random.default_rng(len(case))
    for T in (13, 1):
        for X, lens in padded_batches(T, rng):
            want = sess.run(None, {"x": X, "lengths": lens})[0]  # (N, k)
            for isa in ISAS:
                kernel = fused.FusedKernel(LIB, _spec(case), isa)
                for threads in (1, 2):
                    got = kernel.run_lengths(X, lens, threads=threads).reshape(want.shape)
                    bad = int((got != want).any(axis=1).sum())
                    assert not bad, f"{case} {isa} T={T} N={len(X)} threads={threads}: {bad} rows differ"


@needs_library
@pytest.mark.parametrize("case", ["Bidirectional max", "go_backwards avg", "3 stacked mixed avg"])
def test_garbage_past_the_lengths_and_row_order_change_nothing(case):
    """What lies past each length is never read, and a row's bits do not depend on the other rows (the order the
    kernel sorts them in, or the block they land in)."""
    kernel = fused.FusedKernel(LIB, _spec(case), ISAS[0])
    X, lens = padded_batches(11, np.random.default_rng(3))[0]
    want = kernel.run_lengths(X, lens, threads=2)
    G = np.where(np.isnan(X), np.float32(3e38), X)
    assert np.array_equal(kernel.run_lengths(G, lens, threads=2), want)
    perm = np.random.default_rng(4).permutation(len(X))
    assert np.array_equal(kernel.run_lengths(X[perm], lens[perm], threads=1), want[perm])


@needs_library
def test_predictor_runs_the_kernel_with_lengths(tmp_path):
    """A variable-length artifact of a newly covered shape: the Predictor's self-check passes and it runs the
    kernel, with the numbers of the onnxruntime path."""
    case = "softmax k=5 Bidirectional last"
    folder = write_folder(tmp_path / "m", onnx.load_from_string(_model_bytes(case)), task="multiclass",
                          class_names=[f"c{j}" for j in range(5)], masking=True, preprocessing={"type": "none"})

    p = Predictor.load(folder)
    X, lens = padded_batches(13, np.random.default_rng(5))[0]
    got = p.predict_proba(np.nan_to_num(X), lens)
    info = p.debug_info()["fused"]
    assert info["used"], info
    assert np.array_equal(got, Predictor.load(folder, fused=False).predict_proba(np.nan_to_num(X), lens))


def test_shapes_still_refused_say_why():
    """Normalization -> Masking -> GRU (Keras masks the normalized values: the graph's lengths and the GRU input are
    not the padded model input's) keeps the onnxruntime path with a one-line reason."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, F), name="x")
    norm = keras.layers.Normalization(mean=[0.5] * F, variance=[2.0] * F)
    x = keras.layers.GRU(6)(keras.layers.Masking(mask_value=MASK_VALUE)(norm(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    proto = embed_preprocessing(export_native(model, "x", OPSET), {"type": "none"}, masking=True, pad_value=MASK_VALUE)
    spec, why = match_fused(parse_model(proto.SerializeToString()), "x", "probability", "lengths")
    assert spec is None and "sequence_lens is not each row's steps of the padded input" in why and "\n" not in why, why


# ---------------------------------------------------------------------------- token ids with lengths
VOCAB, DIM = 30, 5
# name -> (the layers after Embedding(VOCAB, DIM, mask_zero=True), the head the spec must read, k, activation)
TOKEN_CASES = {
    "GRU last": (lambda k: [k.layers.GRU(20)], "last", 1, "sigmoid"),
    "GRU avg (last output carried)": (lambda k: [k.layers.GRU(16, return_sequences=True),
                                                 k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "GRU max (last output carried)": (lambda k: [k.layers.GRU(12, return_sequences=True),
                                                 k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "go_backwards reset_after=False last": (lambda k: [k.layers.GRU(9, go_backwards=True, reset_after=False)],
                                            "last", 1, "sigmoid"),
    "go_backwards avg": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "go_backwards max": (lambda k: [k.layers.GRU(10, go_backwards=True, return_sequences=True),
                                    k.layers.GlobalMaxPooling1D()], "max", 1, "sigmoid"),
    "Bidirectional last softmax k=4": (lambda k: [k.layers.Bidirectional(k.layers.GRU(12))], "last", 4, "softmax"),
    "Bidirectional ave avg": (lambda k: [k.layers.Bidirectional(k.layers.GRU(8, return_sequences=True),
                                                                merge_mode="ave"),
                                         k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
    "Bidirectional max multilabel k=3": (lambda k: [k.layers.Bidirectional(k.layers.GRU(7, return_sequences=True)),
                                                    k.layers.GlobalMaxPooling1D()], "max", 3, "sigmoid"),
    "GRU sequence + Bidirectional sum last + Dense(8, tanh)": (lambda k: [
        k.layers.GRU(10, return_sequences=True), k.layers.Bidirectional(k.layers.GRU(6), merge_mode="sum"),
        k.layers.Dense(8, activation="tanh")], "last", 1, "sigmoid"),
    "go_backwards sequence + GRU avg": (lambda k: [k.layers.GRU(9, go_backwards=True, return_sequences=True),
                                                   k.layers.GRU(11, return_sequences=True),
                                                   k.layers.GlobalAveragePooling1D()], "avg", 1, "sigmoid"),
}


def _token_output(case: str) -> str:
    return "probability" if TOKEN_CASES[case][2] == 1 else "probabilities"


@lru_cache(maxsize=None)
def _token_model_bytes(case: str) -> bytes:
    """model.onnx of ``case`` as gru-export ships a token model with lengths: ids (batch, time) and lengths (batch,)
    -> Where(real, ids, 0) -> Embedding(VOCAB, DIM, mask_zero=True) -> layers -> Dense(k, activation)."""
    layers, _, k, activation = TOKEN_CASES[case]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None,), name="x", dtype="int64")  # (batch, time)
    x = keras.layers.Embedding(VOCAB, DIM, mask_zero=True)(inputs)
    for layer in layers(keras):
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(k, activation=activation)(x))  # (batch, k)
    randomize_weights(model, seed=sum(map(ord, case)))
    return embed_preprocessing(export_native(model, "x", OPSET), {"type": "none"}, masking=True).SerializeToString()


def _token_spec(case: str) -> FusedSpec:
    spec, why = match_fused(parse_model(_token_model_bytes(case)), "x", _token_output(case), "lengths")
    assert spec is not None, f"{case}: {why}"
    return spec


def test_the_token_cases_are_what_they_claim():
    for case, (_, head, k, activation) in TOKEN_CASES.items():
        spec = _token_spec(case)
        assert spec.lengths and spec.embedding.shape == (VOCAB, DIM), case
        assert (spec.head, spec.outputs, spec.activation) == (head, k, activation), case
        assert spec.max_reads_zeros == (head == "max" and "carried" not in case), case
    assert [(la.direction, la.flip) for la in _token_spec("go_backwards avg").layers] == [("reverse", (True,))]
    assert [(la.direction, la.merge) for la in _token_spec("GRU sequence + Bidirectional sum last + Dense(8, tanh)")
            .layers] == [("forward", "concat"), ("bidirectional", "sum")]


@needs_library
@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_run_lengths_is_model_onnx_bit_for_bit(case):
    """Every ISA variant, folded and gathered, 1 and 2 threads: plain onnxruntime's bits on model.onnx fed ids and
    lengths, for T = 13 and 1."""
    sess = open_session(_token_model_bytes(case), name=case)
    rng = np.random.default_rng(len(case))
    compared = 0
    for T in (13, 1):
        for ids, lens in token_batches(T, VOCAB, rng):
            want = sess.run(None, {"x": ids, "lengths": lens})[0]  # (N, k)
            for isa in ISAS:
                kernel = fused.FusedKernel(LIB, _token_spec(case), isa)
                for path in ("fold", "gather"):
                    kernel.token_path = path
                    assert kernel.token_path == path
                    for threads in (1, 2):
                        got = kernel.run_lengths(ids, lens, threads=threads).reshape(want.shape)
                        bad = int((got != want).any(axis=1).sum())
                        assert not bad, f"{case} {isa} {path} T={T} N={len(ids)} threads={threads}: {bad} rows differ"
                        compared += got.size
    assert compared > 0


def _edited(case: str, edit) -> bytes:
    """model.onnx of ``case`` changed by edit(graph) (a onnx.GraphProto, changed in place)."""
    proto = onnx.load_from_string(_token_model_bytes(case))
    edit(proto.graph)
    return proto.SerializeToString()


def _node(graph, op: str):
    return next(n for n in graph.node if n.op_type == op)


def _set_init(graph, name: str, value) -> None:
    from onnx import numpy_helper

    tensor = next(t for t in graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(value, numpy_helper.to_array(tensor).dtype), name))


def _gru_lens_from_the_input(graph) -> None:
    """Every GRU's sequence_lens: Cast(lengths, int32) (the lengths input, not the nonzero ids)."""
    from onnx import TensorProto, helper

    graph.node.insert(0, helper.make_node("Cast", ["lengths"], ["lengths_i32"], to=TensorProto.INT32))
    for n in graph.node:
        if n.op_type == "GRU":
            n.input[4] = "lengths_i32"


TOKEN_GRAPH_EDITS = {  # what changes -> (edit, the case, what the reason names)
    "the Equal compares the ids with 1": (lambda g: _set_init(g, _node(g, "Equal").input[1], 1), "GRU last",
                                          "sequence_lens"),
    "sequence_lens is the lengths input": (_gru_lens_from_the_input, "GRU avg (last output carried)", "sequence_lens"),
    "the ids are padded with 3": (lambda g: _set_init(g, _node(g, "Where").input[2], 3), "GRU last", "id 0 past"),
    "the steps are compared with LessOrEqual": (lambda g: setattr(_node(g, "Less"), "op_type", "LessOrEqual"),
                                                "go_backwards avg", "id 0 past"),
    "the mean's mask is not transposed": (
        lambda g: _node(g, "Transpose").attribute[0].CopyFrom(onnx.helper.make_attribute("perm", [0, 1])),
        "go_backwards avg", "mask"),
}


@pytest.mark.parametrize("edit", list(TOKEN_GRAPH_EDITS))
def test_token_graphs_whose_lengths_differ_are_refused(edit):
    """A token graph with lengths is read only when its sequence lengths and masks are the count and positions of
    the nonzero ids, and its ids those before the lengths, padded with 0: else a one-line reason."""
    change, case, names = TOKEN_GRAPH_EDITS[edit]
    spec, why = match_fused(parse_model(_edited(case, change)), "x", _token_output(case), "lengths")
    assert spec is None and "token ids" in why and names in why and "\n" not in why, (edit, why)


def _token_folder(folder, case: str, mask_value):
    """An artifact folder of ``case`` (no reference.npz: the self-check runs on its stress rows)."""
    from pipeline import artifact
    from tiny_models import tiny_manifest

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / artifact.MODEL_FILE
    path.write_bytes(_token_model_bytes(case))
    k = TOKEN_CASES[case][2]
    manifest = tiny_manifest(artifact.sha256_file(path), masking=True, preprocessing={"type": "none"},
                             mask_value=mask_value, **({"task": "multiclass", "class_names": [f"c{j}" for j in range(k)]}
                                                       if k > 1 else {}))
    manifest["input"].update(dtype="int64", shape=["batch", "time"], kind="tokens", vocabulary_size=VOCAB)
    artifact.write_manifest(folder, manifest)
    return folder


@needs_library
def test_predictor_runs_token_models_with_lengths(tmp_path, monkeypatch):
    """A token artifact with lengths: for every ISA the Predictor's self-check passes and it runs the kernel, with the
    numbers of the onnxruntime path (padded ids with lengths, and a list of rows); id 0 before a length is refused
    (mask_value 0, as exports write it); a manifest without mask_value lets it through, and the kernel's refusal
    then gives model.onnx's numbers from the graphs."""
    from pipeline.errors import InputError

    case = "Bidirectional last softmax k=4"
    folder = _token_folder(tmp_path / "m", case, 0.0)
    ids, lens = token_batches(13, VOCAB, np.random.default_rng(6))[0]
    ids = np.where(np.arange(13)[None, :] < lens[:, None], ids, 0)  # the runtime takes ids in the table
    want = Predictor.load(folder, fused=False).predict_proba(ids, lens)
    for isa in ISAS:
        monkeypatch.setattr(fused, "AUTO_ISAS", (isa,))
        p = Predictor.load(folder)
        got = p.predict_proba(ids, lens)
        info = p.debug_info()["fused"]
        assert info["used"] and info["isa"] == isa and info["tokens"] == "fold", info
        assert info["checks"][isa]["max_abs_vs_model_onnx"] == 0.0, info
        assert np.array_equal(got, want), isa
        assert np.array_equal(p.predict_proba([row[:n] for row, n in zip(ids, lens)]), got)
        inside = ids.copy()
        inside[0, 5] = 0
        with pytest.raises(InputError, match="mask value"):
            p.predict_proba(inside, lens)
    lax = _token_folder(tmp_path / "lax", case, None)
    inside = ids.copy()
    inside[0, 5] = 0  # row 0 is T long
    p = Predictor.load(lax)
    got = p.predict_proba(inside, lens)
    assert p.debug_info()["fused"]["used"]
    assert np.array_equal(got, Predictor.load(lax, fused=False).predict_proba(inside, lens))
    assert np.array_equal(got[1:], want[1:]) and not np.array_equal(got[0], want[0])


@pytest.mark.parametrize("case", ["Bidirectional sum last", "go_backwards max", "3 stacked mixed avg"])
def test_damaged_lengths_graphs_are_refused_or_read(case):
    """The reader's contract on the new recognisers (valid_last, the max over the padded sequence): a damaged
    variable-length model.onnx either fails to parse with OnnxReadError or match_fused returns a spec or a
    one-line reason, never another exception."""
    data = _model_bytes(case)
    rng = np.random.default_rng(len(case))
    tally = {"read error": 0, "refused": 0, "spec": 0}
    damaged = [data[:n] for n in range(0, len(data), max(1, len(data) // 150))]
    for _ in range(300):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), 3):
            b[pos] = int(rng.integers(0, 256))
        damaged.append(bytes(b))
    for d in damaged:
        try:
            graph = parse_model(d)
        except OnnxReadError:
            tally["read error"] += 1
            continue
        spec, why = match_fused(graph, "x", _output(case), "lengths")
        assert (spec is None) == bool(why) and "\n" not in why, why
        tally["spec" if spec is not None else "refused"] += 1
    assert tally["refused"] and tally["read error"], tally
