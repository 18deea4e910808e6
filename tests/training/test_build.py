"""Build path under TensorFlow: a tiny config trains, exports, verifies and publishes; a broken
export is caught and leaves the previous artifact in place."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from onnx import numpy_helper  # noqa: E402

from pipeline.artifact import sha256_file  # noqa: E402
from pipeline.packaging import exporter  # noqa: E402
from pipeline.training import run as builder  # noqa: E402
from pipeline.settings import load_config  # noqa: E402
from pipeline.errors import VerificationError  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402

TINY = {
    "data": {"n_samples": 240, "timesteps": 12, "features": 3},
    "model": {"units": 8},
    "train": {"epochs": 2, "batch_size": 32, "verbose": "0"},
    "verify": {"n_random": 32, "large_batch": 64, "odd_batch": 7},
}


def tiny_config(out, **extra):
    cfg = {**TINY, "out": str(out)}
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return load_config(None, cfg)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "artifact"
    result = builder.run_build(tiny_config(out))
    return out, result


def test_tiny_build_writes_a_verified_artifact(built):
    out, result = built
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "manifest.json", "reference.npz", "report.md"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha256_file(out / "model.onnx")
    assert manifest["equivalence"]["passed"] and manifest["equivalence"]["max_abs_error"] <= 1e-5
    assert manifest["input"]["shape"] == ["batch", "time", 3]
    assert manifest["config"]["model"]["units"] == 8 and manifest["seed"] == 0
    for tool in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        assert manifest["versions"][tool]
    assert len(manifest["preprocessing"]["mean"]) == 3
    ref = np.load(out / "reference.npz")
    p = Predictor.load(out)
    assert np.abs(p.predict_proba(ref["X"]) - ref["keras_proba"]).max() <= 1e-5
    assert not list(out.parent.glob(".artifact.*")), "staging folders left behind"


def test_unrolled_graph_ships_verified_and_a_failing_one_is_dropped(built, tmp_path, monkeypatch):
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["unrolled"]
    assert entry["supported"] and entry["timesteps"] == 12
    assert entry["sha256"] == sha256_file(out / entry["file"])
    v = entry["verification"]
    assert v["max_abs_error_vs_keras"] <= 1e-5
    assert entry["auto"] == (v["inputs_over_strategy_atol"] == 0) == (v["max_abs_error_vs_native"] <= 1e-6)
    assert "large batch (64)" in v["families"] and "batch of 1" in v["families"]
    X = np.load(out / "reference.npz")["X"]
    assert np.abs(Predictor.load(out, graph="unrolled").predict_proba(X)
                  - Predictor.load(out, graph="native").predict_proba(X)).max() <= 1e-6

    # An unrolled graph that disagrees with Keras is not shipped; the build still publishes model.onnx.
    from pipeline.packaging import graphs  # stages the graph pipeline.export.unrolled builds

    real = graphs.unroll_grus

    def off_by_a_bit(proto, T):
        bad = real(proto, T)
        for init in bad.graph.initializer:
            if init.name.startswith("unr_Wz"):
                arr = numpy_helper.to_array(init).copy()
                arr[-1] += 0.5  # the z-gate bias
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
        return bad

    monkeypatch.setattr(graphs, "unroll_grus", off_by_a_bit)
    out2 = tmp_path / "artifact2"
    builder.run_build(tiny_config(out2))
    entry = json.loads((out2 / "manifest.json").read_text())["unrolled"]
    assert not entry["supported"] and "unrolled graph vs Keras" in entry["reason"]
    assert not (out2 / "model_unrolled.onnx").exists()
    assert Predictor.load(out2).unrolled_timesteps is None


def _perturb_gru_kernel(proto) -> None:
    for init in proto.graph.initializer:
        if init.name.startswith("W"):  # the GRU input kernel
            w = numpy_helper.to_array(init).copy()
            w += 0.05 * np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w, init.name))


@pytest.mark.parametrize("retries", [1, 0])
def test_refused_model_is_retrained_with_a_halved_recurrent_cap(tmp_path, monkeypatch, retries):
    real_export = exporter.convert
    calls = []

    def first_export_wrong(model, backend, opset):
        proto, backend, reason = real_export(model, backend, opset)
        calls.append(model.get_layer("gru_0").cell.recurrent_constraint.max_value)
        if len(calls) == 1:
            _perturb_gru_kernel(proto)
        return proto, backend, reason

    monkeypatch.setattr(exporter, "convert", first_export_wrong)
    out = tmp_path / "artifact"
    cfg = tiny_config(out, train={"epochs": 1, "conditioning_retries": retries})
    if retries == 0:
        with pytest.raises(VerificationError, match="Keras and ONNX disagree"):
            builder.run_build(cfg)
        assert calls == [2.0] and not out.exists()
        return
    manifest = builder.run_build(cfg).manifest
    assert calls == [2.0, 1.0]
    assert manifest["config"]["model"]["recurrent_norm_max"] == 1.0
    [refused] = manifest["conditioning_retries"]
    assert refused["recurrent_norm_max"] == 2.0 and "Keras and ONNX disagree" in refused["error"]
    assert "refused by verification" in (out / "report.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["conditioning_retries"] == manifest["conditioning_retries"]


def test_broken_export_is_caught_and_previous_artifact_kept(built, monkeypatch):
    out, _ = built
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_export = exporter.convert

    def perturbed(model, backend, opset):
        proto, backend, reason = real_export(model, backend, opset)
        _perturb_gru_kernel(proto)  # every attempt, so the retry with a tighter cap fails too
        return proto, backend, reason

    monkeypatch.setattr(exporter, "convert", perturbed)
    with pytest.raises(VerificationError, match="Keras and ONNX disagree") as info:
        builder.run_build(tiny_config(out, train={"epochs": 1}))
    # The message explains which side left the float64 result: Keras stays close, ONNX does not.
    assert "from a float64 evaluation of the same weights" in str(info.value)
    keras_gap = float(str(info.value).split("Keras is ")[1].split()[0])
    assert keras_gap < 1e-5
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    Predictor.load(out)  # still loadable and trusted
    assert not list(out.parent.glob(".artifact.*")), "staging folders left behind"


def test_tf2onnx_backend_is_verified_too(tmp_path):
    out = tmp_path / "tf2onnx"
    result = builder.run_build(tiny_config(out, export={"backend": "tf2onnx"}, train={"epochs": 1}))
    assert result.manifest["model"]["backend"] == "tf2onnx"
    assert "Loop" in result.manifest["model"]["ops"]
    assert result.manifest["equivalence"]["passed"]


def test_build_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    from pipeline.training.cli import main

    code = main(["--units", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "gru-build: error: model.units must be >= 1, got 0"
    assert not (tmp_path / "x").exists()
