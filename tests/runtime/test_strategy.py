"""The runtime's execution strategy (threads, chunking, graph form) never changes the numbers beyond 1e-6."""

import json
import shutil
from pathlib import Path

import numpy as np

from pipeline.runtime import Predictor
from pipeline.runtime import predictor as predictor_module

EXPORTED = Path(__file__).resolve().parents[2] / "exported"


def test_results_do_not_depend_on_threads_or_chunking():
    X = np.random.default_rng(3).standard_normal((300, 50, 8)).astype(np.float32)
    serial = Predictor.load(EXPORTED, threads=1).predict_proba(X)
    parallel = Predictor.load(EXPORTED, threads=2).predict_proba(X)
    one_by_one = np.concatenate([Predictor.load(EXPORTED).predict_proba(X[i:i + 1]) for i in range(0, 300, 37)])
    assert np.abs(serial - parallel).max() <= 1e-6
    assert np.abs(serial[::37] - one_by_one).max() <= 1e-6
    # Odd sizes around the chunk boundaries.
    p = Predictor.load(EXPORTED, threads=2)
    for n in (predictor_module.SMALL_BATCH, predictor_module.SMALL_BATCH + 1, predictor_module.CHUNK_MAX * 2 + 3):
        assert np.abs(p.predict_proba(X[:n]) - serial[:n]).max() <= 1e-6


def test_graph_forms_agree_with_keras_and_each_other():
    """model_unrolled.onnx and model.onnx both reproduce Keras; their difference stays within what
    the build measured (and within 1e-6 on the reference rows)."""
    entry = Predictor.load(EXPORTED).manifest["unrolled"]
    assert entry["supported"] and entry["verification"]["max_abs_error_vs_keras"] <= 1e-5
    ref = np.load(EXPORTED / "reference.npz")
    native = Predictor.load(EXPORTED, graph="native")
    unrolled = Predictor.load(EXPORTED, graph="unrolled")
    assert unrolled.unrolled_timesteps == entry["timesteps"] and native.unrolled_timesteps is None
    p_native, p_unrolled = native.predict_proba(ref["X"]), unrolled.predict_proba(ref["X"])
    assert unrolled._unrolled is not None  # the forced form really ran
    assert np.abs(p_unrolled - ref["keras_proba"]).max() <= 1e-5
    assert np.abs(p_unrolled - p_native).max() <= 1e-6
    X = np.random.default_rng(5).standard_normal((300, entry["timesteps"], native.n_features)).astype(np.float32)
    gap = np.abs(unrolled.predict_proba(X).astype(np.float64) - native.predict_proba(X)).max()
    assert gap <= max(1e-6, entry["verification"]["max_abs_error_vs_native"])


def test_auto_switches_graph_only_when_the_build_allowed_it(tmp_path):
    """With "auto": true the runtime sends batches of 64+ rows of the trained length to the unrolled
    graph (loaded on first use) and everything else to model.onnx; with "auto": false never.
    (The onnxruntime strategy itself: the fused kernel, which "auto" prefers, is off here.)"""
    folder = tmp_path / "exported"
    shutil.copytree(EXPORTED, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    T = manifest["unrolled"]["timesteps"]
    X = np.random.default_rng(6).standard_normal((2 * predictor_module.UNROLLED_CHUNK_MAX + 7, T, 8))
    X = X.astype(np.float32)
    want = Predictor.load(EXPORTED, graph="unrolled").predict_proba(X)
    for auto in (True, False):
        manifest["unrolled"]["auto"] = auto
        (folder / "manifest.json").write_text(json.dumps(manifest))
        p = Predictor.load(folder, fused=False)
        assert p.unrolled_timesteps == (T if auto else None)
        for n in (1, predictor_module.UNROLLED_MIN_ROWS - 1, predictor_module.UNROLLED_MIN_ROWS, len(X)):
            got = p.predict_proba(X[:n])
            uses_unrolled = auto and n >= predictor_module.UNROLLED_MIN_ROWS
            assert (p._unrolled is not None) == uses_unrolled
            if uses_unrolled:
                assert np.array_equal(got, want[:n])  # chunking never changes a row
        # other lengths always run the native graph (dynamic time axis)
        Y = X[:100, : T - 3]
        assert np.array_equal(p.predict_proba(Y), Predictor.load(EXPORTED, graph="native").predict_proba(Y))


def test_unknown_graph_form_is_refused():
    import pytest

    from pipeline.errors import InputError

    with pytest.raises(InputError, match="graph: expected one of"):
        Predictor.load(EXPORTED, graph="fast")
