"""Streaming inference: Stream equals Predictor on whole sequences for any chunking, keeps its state
across pushes, leaves it unchanged on bad input, resumes from get_state, refuses models that cannot
stream, and works through ``gru-predict MODEL_DIR - --stream``.

Tiny exported folders are built once per session with the real build (TensorFlow needed)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pipeline.training.run import run_build  # noqa: E402
from pipeline.settings import load_config  # noqa: E402
from pipeline.verification.stream import random_chunking  # noqa: E402
from pipeline.errors import ArtifactError, InputError, StreamError  # noqa: E402
from pipeline.runtime import Predictor  # noqa: E402
from pipeline.runtime.stream import Stream  # noqa: E402

from tests.conftest import ROOT  # noqa: E402

F, T = 3, 12
ATOL = 1e-6
VARIANTS = {
    "default": {},  # average-pooling head: carries the running mean and step count as states
    "last state": {"model": {"head": "last"}},
    "stacked": {"model": {"layers": 2}},
    "masked": {"model": {"masking": True}},
}


def _build(out, extra):
    cfg = {"data": {"n_samples": 200, "timesteps": T, "features": F}, "model": {"units": 8},
           "train": {"epochs": 1, "verbose": "0"}, "verify": {"n_random": 32, "large_batch": 64, "odd_batch": 7},
           "out": str(out)}
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return run_build(load_config(None, cfg))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """{variant: exported folder}, built lazily once per session."""
    root = tmp_path_factory.mktemp("stream")
    cache = {}

    def get(name):
        if name not in cache:
            extra = {"model": {"bidirectional": True}} if name == "bidirectional" else VARIANTS[name]
            _build(root / name, extra)
            cache[name] = root / name
        return cache[name]

    return get


def _data(n, length, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, length, F)) * 2 + 0.5).astype(np.float32)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_matches_predict_proba_for_random_chunkings(exported, variant):
    folder = exported(variant)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["stream"]
    assert entry["supported"] and entry["verification"]["passed"]
    assert entry["verification"]["max_abs_error_proba"] <= ATOL
    n_gru = 2 if variant == "stacked" else 1
    n_avg = 0 if variant == "last state" else 2  # the average head's running mean and step count
    assert len(entry["states"]) == n_gru + n_avg
    p = Predictor.load(folder)
    X = _data(6, 20, seed=1)  # longer than trained: streams are not limited to T
    full = np.stack([p.predict_proba(X[:, :t]) for t in range(1, 21)], axis=1)  # (6, 20) every prefix
    rng = np.random.default_rng(2)
    worst = 0.0
    with p.stream() as s:
        for i in range(len(X)):
            for sizes in ([1] * 20, [20], random_chunking(20, rng, 7), random_chunking(20, rng)):
                s.reset()
                t = 0
                for n in sizes:
                    prob = s.push(X[i, t:t + n])
                    t += n
                    assert isinstance(prob, float)
                    worst = max(worst, abs(prob - full[i, t - 1]))
                assert s.steps == 20
    assert worst <= ATOL, worst


def test_batched_streams_match_single_streams(exported):
    p = Predictor.load(exported("stacked"))
    X = _data(5, 15, seed=3)
    want = p.predict_proba(X)
    with p.stream(n_streams=5) as s:
        t = 0
        for n in random_chunking(15, np.random.default_rng(4), 4):
            out = s.push(X[:, t:t + n])
            t += n
        assert out.shape == (5,) and out.dtype == np.float32
        assert np.abs(out - want).max() <= ATOL
        state = s.get_state()
        assert all(state[f"h_in_{i}"].shape == (5, 1, 8) for i in range(2)) and state["avg_mean_in"].shape == (5, 1, 8)
        assert np.array_equal(state["avg_count_in"], np.full((5, 1, 1), 15.0, np.float32))


def test_get_state_set_state_resumes_exactly(exported):
    p = Predictor.load(exported("stacked"))
    X = _data(1, 16, seed=5)[0]
    with p.stream() as ref:
        uninterrupted = ref.push(X)
    a = p.stream()
    for t in range(8):
        a.push(X[t:t + 1])
    saved = a.get_state()
    assert set(saved) == {"h_in_0", "h_in_1", "avg_mean_in", "avg_count_in"} and saved["h_in_0"].shape == (1, 8)
    assert saved["avg_mean_in"].shape == (1, 8) and saved["avg_count_in"].tolist() == [[8.0]]  # 8 steps pushed
    kept = {k: v.copy() for k, v in saved.items()}
    saved["h_in_0"][...] = 99.0  # get_state returns copies: the stream must not see this
    assert np.array_equal(a.get_state()["h_in_0"], kept["h_in_0"])
    b = p.stream()
    b.push(X[:3])  # some other history, replaced by set_state
    b.set_state(kept)
    assert all(np.array_equal(b.get_state()[k], kept[k]) for k in kept)
    resumed = b.push(X[8:])
    assert abs(resumed - a.push(X[8:])) <= 1e-7
    assert abs(resumed - uninterrupted) <= ATOL
    assert abs(uninterrupted - p.predict_proba(X[None])[0]) <= ATOL


def test_reset_starts_a_new_sequence(exported):
    p = Predictor.load(exported("default"))
    X = _data(2, 10, seed=6)
    with p.stream() as s:
        s.push(X[0])
        s.reset()
        assert s.steps == 0 and s.probability is None
        assert all(not v.any() for v in s.get_state().values())
        assert abs(s.push(X[1]) - p.predict_proba(X[1:2])[0]) <= ATOL


@pytest.mark.parametrize("bad, match", [
    (np.ones((1, F + 1), np.float32), "expected 3 features"),
    (np.ones((F,), np.float32), "2-D array"),
    (np.ones((1, 1, F), np.float32), "2-D array"),
    (np.ones((0, F), np.float32), "empty chunk"),
    (np.array([[1.0, np.nan, 0.0]], np.float32), "finite"),
    (np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 0.0]]), "finite.*timestep 1, feature 0"),
    (np.array([["a", "b", "c"]]), "numeric"),
])
def test_bad_input_raises_and_leaves_state_unchanged(exported, bad, match):
    p = Predictor.load(exported("default"))
    X = _data(1, 6, seed=7)[0]
    with p.stream() as s:
        before_p = s.push(X[:4])
        before = s.get_state()
        with pytest.raises(InputError, match=match) as info:
            s.push(bad)
        assert "\n" not in str(info.value)
        assert s.steps == 4 and s.probability == before_p
        assert all(np.array_equal(before[k], v) for k, v in s.get_state().items())
        assert abs(s.push(X[4:]) - p.predict_proba(X[None])[0]) <= ATOL


def test_batched_bad_input_and_set_state_validation(exported):
    p = Predictor.load(exported("default"))
    s = p.stream(n_streams=4)
    s.push(_data(4, 3))
    before = s.get_state()
    with pytest.raises(InputError, match="expected 4 streams"):
        s.push(_data(3, 2))
    with pytest.raises(InputError, match="3-D array"):
        s.push(_data(1, 2)[0])
    with pytest.raises(InputError, match="expected keys"):
        s.set_state({"nope": before["h_in_0"]})
    with pytest.raises(InputError, match="shape"):
        s.set_state({**before, "h_in_0": before["h_in_0"][:2]})
    with pytest.raises(InputError, match="finite"):
        s.set_state({**before, "h_in_0": np.full_like(before["h_in_0"], np.nan)})
    assert all(np.array_equal(before[k], v) for k, v in s.get_state().items())
    with pytest.raises(StreamError, match="n_streams"):
        p.stream(n_streams=0)


def test_masked_model_streams_zero_steps_as_data(exported):
    """A gru-build variable-length model masks from lengths, never from values: a step that scales to exactly 0
    (the old mask value) is data in a stream too, and moves the state."""
    folder = exported("masked")
    p = Predictor.load(folder)
    mean = np.asarray(p.manifest["preprocessing"]["mean"], np.float32)
    with p.stream() as s:
        s.push(_data(1, 3)[0])
        before = s.get_state()
        assert np.isfinite(s.push(mean[None]))  # scales to exactly 0
        assert any(not np.array_equal(before[k], v) for k, v in s.get_state().items())


def test_closed_stream_refuses_everything(exported):
    p = Predictor.load(exported("default"))
    s = Stream.open(p)
    s.close()
    s.close()
    for call in (lambda: s.push(np.ones((1, F))), s.reset, s.get_state, lambda: s.set_state({})):
        with pytest.raises(StreamError, match="closed"):
            call()


def test_bidirectional_is_refused_with_the_reason(exported):
    folder = exported("bidirectional")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stream"]["supported"] is False
    assert not (folder / "stream.onnx").exists()
    p = Predictor.load(folder)
    with pytest.raises(StreamError, match="cannot be streamed: a Bidirectional GRU needs the whole sequence"):
        p.stream()


def test_tampered_stream_file_is_refused(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported("default"), copy)
    data = bytearray((copy / "stream.onnx").read_bytes())
    data[-5] ^= 0xFF
    (copy / "stream.onnx").write_bytes(bytes(data))
    p = Predictor.load(copy)  # model.onnx is intact
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        p.stream()
    (copy / "stream.onnx").unlink()
    with pytest.raises(ArtifactError, match="not found"):
        Predictor.load(copy).stream()


def _cli(folder, stdin, *extra):
    return subprocess.run([sys.executable, "-m", "pipeline.runtime", str(folder), "-", "--stream", *extra],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_stream_prints_running_probability(exported):
    folder = exported("default")
    p = Predictor.load(folder)
    X = _data(1, 5, seed=8)[0]
    lines = "\n".join(",".join(f"{v:.9g}" for v in row) for row in X) + "\n"
    res = _cli(folder, "# header comment\n" + lines + "\nreset\n" + lines)
    assert res.returncode == 0, res.stderr
    got = np.array([float(v) for v in res.stdout.split()])
    X64 = np.array([[float(f"{v:.9g}") for v in row] for row in X], np.float32)
    want = np.array([p.predict_proba(X64[None, :t])[0] for t in range(1, 6)])
    assert got.shape == (10,)
    assert np.abs(got[:5] - want).max() <= ATOL and np.abs(got[5:] - want).max() <= ATOL


def test_cli_stream_stops_at_a_bad_line(exported):
    res = _cli(exported("default"), "1,2,3\n1,2\n4,5,6\n")
    assert res.returncode == 2
    assert len(res.stdout.split()) == 1  # the good line before the bad one was answered
    assert res.stderr.strip().count("\n") == 0
    assert "stdin line 2: expected 3 comma-separated numbers, got 2" in res.stderr
    res = _cli(exported("default"), "1,x,3\n")
    assert res.returncode == 2 and "stdin line 1" in res.stderr
