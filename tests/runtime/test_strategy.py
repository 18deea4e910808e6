"""The runtime's execution strategy (threads, chunking) never changes the numbers."""

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
