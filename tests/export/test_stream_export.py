"""stream.onnx export: written and verified against Keras (initial_state/return_state) for models that
can stream, refused with a reason for those that cannot, and a disagreement fails the export."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pipeline.artifact import sha256_file  # noqa: E402
from pipeline.keras_source.run import keras_proba  # noqa: E402
from pipeline.packaging import graphs  # noqa: E402
from pipeline.verification import stream as stream_verification  # noqa: E402
from pipeline.settings import ModelConfig  # noqa: E402
from pipeline.training.model import build_model  # noqa: E402
from pipeline.errors import VerificationError  # noqa: E402

F = 3


def _manifest():
    return {"input": {"name": "x", "shape": ["batch", "time", F], "kind": "features"}, "timesteps_trained": 10}


def _stage(model, tmp_path, manifest):
    """stream.onnx staged in tmp_path and checked at the default stream tolerance (1e-6) on T=10."""
    plan = stream_verification.StreamPlan(F=F, T=manifest["timesteps_trained"], seed=0)
    return graphs.stage_stream(model, tmp_path, manifest, 17, lambda Z, lengths: keras_proba(model, Z, lengths), plan)


def _model(masking=False, **cfg):
    import keras

    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(units=6, **cfg), F, masking)


@pytest.mark.parametrize("cfg, masking", [
    ({}, False),
    ({"layers": 2}, False),
    ({}, True),
    ({"reset_after": False, "recurrent_activation": "hard_sigmoid"}, False),
    ({"use_bias": False, "activation": "relu", "layers": 3}, False),
    ({"head": "last"}, False),
    ({"head": "last", "layers": 2, "recurrent_norm_max": 0.0}, True),
])
def test_streamable_models_export_and_verify(tmp_path, cfg, masking):
    manifest = _manifest()
    entry = _stage(_model(masking, **cfg), tmp_path, manifest)
    assert manifest["stream"] is entry and entry["supported"]
    assert entry["sha256"] == sha256_file(tmp_path / "stream.onnx")
    n = cfg.get("layers", 1)
    want = [{"input": f"h_in_{i}", "output": f"h_out_{i}", "shape": [1, 6]} for i in range(n)]
    if ModelConfig(**cfg).head == "avg":  # the default head: its running mean and step count are carried like GRU states
        want += [{"input": "avg_mean_in", "output": "avg_mean_out", "shape": [1, 6]},
                 {"input": "avg_count_in", "output": "avg_count_out", "shape": [1, 1]}]
    assert entry["states"] == want
    v = entry["verification"]
    assert v["passed"] and v["max_abs_error_proba"] <= 1e-6 and v["max_abs_error_state"] <= 1e-6
    assert v["chunkings"] >= 3 and v["max_abs_error_twin_vs_model"] <= 1e-5


@pytest.mark.parametrize("cfg, reason", [
    ({"bidirectional": True}, "Bidirectional"),
    ({"go_backwards": True}, "go_backwards"),
    ({"head": "max"}, "max pooling"),
])
def test_unstreamable_models_are_recorded_not_written(tmp_path, cfg, reason):
    manifest = _manifest()
    entry = _stage(_model(**cfg), tmp_path, manifest)
    assert entry["supported"] is False and reason in entry["reason"]
    assert manifest["stream"] == entry
    assert not (tmp_path / "stream.onnx").exists()


def test_a_disagreeing_stream_graph_fails_verification(tmp_path, monkeypatch):
    real = stream_verification.onnx_chunk_runner

    def drifting(*args):
        run = real(*args)

        def wrapped(x, states):
            p, s = run(x, states)
            return p, [h + np.float32(2e-6) for h in s]  # tiny drift in the carried state

        return wrapped

    monkeypatch.setattr(graphs, "onnx_chunk_runner", drifting)
    with pytest.raises(VerificationError, match="stream.onnx disagrees with Keras"):
        _stage(_model(), tmp_path, _manifest())


def test_random_chunking_covers_the_sequence():
    rng = np.random.default_rng(0)
    for T in (1, 2, 7, 50):
        for _ in range(20):
            sizes = stream_verification.random_chunking(T, rng, 5)
            assert sum(sizes) == T and min(sizes) >= 1 and max(sizes) <= 5


def _normalized_model(order: str):
    """Input -> [Masking] -> adapted Normalization (axis=-1) -> [Masking] -> GRU(6) [-> avg pool] -> Dense(1, sigmoid)."""
    import keras

    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(axis=-1)
    raw = np.random.default_rng(3).standard_normal((64, 10, F)) * [2.0, 0.5, 1.0] + [0.5, -1.0, 2.0]
    norm.adapt(raw.astype(np.float32))  # (64, 10, F)
    inputs = keras.Input(shape=(None, F), name="x")  # (batch, time, F)
    x = keras.layers.Masking(0.0)(inputs) if order.startswith("masking") else inputs
    x = norm(x)
    if order.endswith("masking"):
        x = keras.layers.Masking(0.0)(x)
    x = keras.layers.GRU(6, return_sequences=order == "avg")(x)
    if order == "avg":
        x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


@pytest.mark.parametrize("order, n_states", [("last", 1), ("avg", 3), ("masking first", 1)])
def test_normalization_models_stream(tmp_path, order, n_states):
    """A model's own Normalization is part of stream.onnx and verified chunk by chunk against Keras."""
    import onnx

    manifest = _manifest()
    entry = _stage(_normalized_model(order), tmp_path, manifest)
    assert entry["supported"] and len(entry["states"]) == n_states
    ops = {n.op_type for n in onnx.load(str(tmp_path / "stream.onnx")).graph.node}
    assert {"Sub", "Div", "GRU"} <= ops
    v = entry["verification"]
    assert v["passed"] and v["max_abs_error_proba"] <= 1e-6 and v["max_abs_error_state"] <= 1e-6
    assert v["max_abs_error_twin_vs_model"] <= 1e-5


def test_masking_after_normalization_does_not_stream(tmp_path):
    """Keras masks steps whose normalized values equal the mask value; unpadded stream chunks cannot
    honour that (the runtime checks only raw steps), so stream.onnx is refused with the reason."""
    manifest = _manifest()
    entry = _stage(_normalized_model("normalization then masking"), tmp_path, manifest)
    assert entry["supported"] is False and "Masking layer after Normalization" in entry["reason"]
    assert not (tmp_path / "stream.onnx").exists()
