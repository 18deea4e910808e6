"""One loaded Predictor shared by 8 threads gives exactly the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pipeline.runtime import Predictor


def test_eight_threads_match_serial(tiny_model_dir):
    predictor = Predictor.load(tiny_model_dir, threads=2)
    rng = np.random.default_rng(0)
    # small batches (caller's thread), large ones (the predictor's own pool), lists (length groups)
    jobs = []
    for k in range(48):
        n = [1, 5, 16, 17, 200, 700][k % 6]
        if k % 4 == 3:
            jobs.append([rng.standard_normal((int(rng.integers(1, 9)), 3)).astype(np.float32) for _ in range(n)])
        else:
            jobs.append(rng.standard_normal((n, 1 + k % 7, 3)).astype(np.float32))
    serial = [predictor.predict_proba(X) for X in jobs]
    serial_labels = [predictor.predict(X) for X in jobs]

    start = threading.Barrier(8)

    def work(offset: int):
        start.wait()
        out = []
        for i in range(len(jobs)):
            j = (i + offset * 5) % len(jobs)  # every thread in a different order
            out.append((j, predictor.predict_proba(jobs[j]), predictor.predict(jobs[j])))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    checked = 0
    for per_thread in results:
        for j, proba, labels in per_thread:
            assert proba.shape == serial[j].shape
            assert np.array_equal(proba, serial[j]), f"job {j} differs under concurrency"
            assert np.array_equal(labels, serial_labels[j])
            checked += 1
    assert checked == 8 * len(jobs)


def test_concurrent_bad_input_does_not_poison_others(tiny_model_dir):
    predictor = Predictor.load(tiny_model_dir, threads=2)
    good = np.random.default_rng(1).standard_normal((300, 4, 3)).astype(np.float32)
    want = predictor.predict_proba(good)
    bad = good.copy()
    bad[7, 1, 2] = np.nan

    def work(i: int):
        if i % 2:
            try:
                predictor.predict_proba(bad)
            except ValueError:  # InputError
                return None
            raise AssertionError("NaN input was accepted")
        return predictor.predict_proba(good)

    with ThreadPoolExecutor(8) as pool:
        for out in pool.map(work, range(32)):
            if out is not None:
                assert np.array_equal(out, want)
