"""The runtime's execution strategy (threads, chunking, graph form) never changes the numbers beyond 1e-6."""

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


def test_graph_forms_agree_and_auto_picks_unrolled_for_large_batches():
    """model_unrolled.onnx (large batches of the trained length) and model.onnx give the same numbers."""
    p = Predictor.load(EXPORTED)
    T = p.manifest["unrolled"]["timesteps"]
    assert p.manifest["unrolled"]["supported"] and p.unrolled_timesteps == T
    X = np.random.default_rng(5).standard_normal((2 * predictor_module.UNROLLED_CHUNK_MAX + 7, T, p.n_features))
    X = X.astype(np.float32)
    native = Predictor.load(EXPORTED, graph="native").predict_proba(X)
    unrolled = Predictor.load(EXPORTED, graph="unrolled").predict_proba(X)
    assert np.abs(native - unrolled).max() <= 1e-6
    assert p._unrolled is None  # loaded on first use only
    for n in (1, predictor_module.UNROLLED_MIN_ROWS - 1, predictor_module.UNROLLED_MIN_ROWS, len(X)):
        got = p.predict_proba(X[:n])
        assert np.abs(got - native[:n]).max() <= 1e-6
        assert (p._unrolled is not None) == (n >= predictor_module.UNROLLED_MIN_ROWS)
    # other lengths always run the native graph (dynamic time axis)
    Y = X[:100, : T - 3]
    assert np.abs(p.predict_proba(Y) - Predictor.load(EXPORTED, graph="native").predict_proba(Y)).max() == 0


def test_unknown_graph_form_is_refused():
    import pytest

    from pipeline.errors import InputError

    with pytest.raises(InputError, match="graph: expected one of"):
        Predictor.load(EXPORTED, graph="fast")
