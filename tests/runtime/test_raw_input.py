"""The graphs take raw features; the runtime feeds them as they are and only checks them.

Uses the tiny graphs of conftest.py, which scale their raw input themselves (the variable-length
one also takes ``lengths``; its rules are in test_lengths.py).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.errors import InputError
from pipeline.runtime import Predictor

F = 3


def _raw(n=3, t=5, seed=0):
    return np.random.default_rng(seed).normal(2.0, 3.0, (n, t, F)).astype(np.float32)


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_masked_model_dir"])
def test_plain_onnxruntime_on_raw_features_equals_the_predictor(request, fixture):
    folder = request.getfixturevalue(fixture)
    X = _raw()
    feed = {"x": X}
    if fixture == "tiny_masked_model_dir":  # the variable-length graph: full rows unless told otherwise
        feed["lengths"] = np.full(len(X), X.shape[1], np.int64)
    plain = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    # the onnxruntime path gives the very same bits; the fused GRU kernel (the default where it
    # covers the model) is held to 1e-6 of model.onnx by its self-check
    assert np.array_equal(plain[:, 0], Predictor.load(folder, fused=False).predict_proba(X))
    assert np.abs(plain[:, 0] - Predictor.load(folder).predict_proba(X)).max() <= 1e-6


def test_unmasked_model_accepts_zero_steps(tiny_predictor):
    X = np.zeros((2, 4, F), np.float32)  # raw zeros are ordinary values without a mask
    assert tiny_predictor.predict_proba(X).shape == (2,)


def test_scaled_overflow_names_the_value(tiny_predictor):
    X = _raw(2, 3)
    X[1, 2, 1] = 3.0e38  # finite, but (x - mean) / 0.75 is not
    with np.errstate(over="ignore"), pytest.raises(InputError, match=r"X after standardization: expected finite values, "
                                                                       r"got inf at sample 1, timestep 2, feature 1"):
        tiny_predictor.predict_proba(X)
