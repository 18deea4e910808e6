"""Schema 2: the graphs take raw features; the runtime feeds them as they are and only checks them.

Uses the tiny graphs of conftest.py, which scale their raw input themselves (and, masked, turn
all-zero raw steps into exact zeros). The rules for a masked model's input (README "Padding"):
an all-zero raw step is padding; padding comes last; with ``lengths`` the steps after them are
padding whatever they hold; a real step must have a nonzero raw feature and must not scale to
the mask value.
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
    plain = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    # the onnxruntime path gives the very same bits; the fused GRU kernel (the default where it
    # covers the model) is held to 1e-6 of model.onnx by its self-check
    assert np.array_equal(plain[:, 0], Predictor.load(folder, fused=False).predict_proba(X))
    assert np.abs(plain[:, 0] - Predictor.load(folder).predict_proba(X)).max() <= 1e-6


def test_masked_padding_trailing_zeros_equal_lengths_and_padding_content_is_ignored(tiny_masked_model_dir):
    p = Predictor.load(tiny_masked_model_dir)
    X = _raw()
    lengths = np.array([5, 2, 4])
    zero_padded = X.copy()
    zero_padded[np.arange(5)[None, :] >= lengths[:, None]] = 0.0
    garbage = X.copy()
    garbage[np.arange(5)[None, :] >= lengths[:, None]] = np.nan
    before = garbage.copy()
    expected = p.predict_proba(zero_padded)  # lengths read off the trailing all-zero steps
    assert np.array_equal(p.predict_proba(zero_padded, lengths=lengths), expected)
    assert np.array_equal(p.predict_proba(garbage, lengths=lengths), expected)
    assert np.array_equal(garbage, before, equal_nan=True), "the caller's array was written to"


@pytest.mark.parametrize("where, lengths, match", [
    ("inner", None, r"sample 0 timestep 2: every raw feature is 0.*mask value"),
    ("left", None, r"sample 0 timestep 0: every raw feature is 0"),
    ("trailing", np.array([5, 5, 5]), r"sample 0 timestep 4: every raw feature is 0"),  # lengths say it is real
    ("row", None, r"sample 0: every timestep's raw features are all 0"),
])
def test_masked_model_refuses_zero_steps_that_are_not_trailing_padding(tiny_masked_model_dir, where, lengths, match):
    p = Predictor.load(tiny_masked_model_dir)
    X = _raw()
    X[0, {"inner": 2, "left": 0, "trailing": 4, "row": slice(None)}[where]] = 0.0
    with pytest.raises(InputError, match=match) as info:
        p.predict_proba(X, lengths=lengths)
    assert "\n" not in str(info.value)


def test_masked_model_list_input_steps_are_all_real(tiny_masked_model_dir):
    p = Predictor.load(tiny_masked_model_dir)
    seq = _raw(1, 4)[0]
    seq[-1] = 0.0
    with pytest.raises(InputError, match="timestep 3: every raw feature is 0"):
        p.predict_proba([seq, seq])


def test_unmasked_model_accepts_zero_steps(tiny_predictor):
    X = np.zeros((2, 4, F), np.float32)  # raw zeros are ordinary values without a mask
    assert tiny_predictor.predict_proba(X).shape == (2,)


def test_scaled_overflow_names_the_value(tiny_predictor):
    X = _raw(2, 3)
    X[1, 2, 1] = 3.0e38  # finite, but (x - mean) / 0.75 is not
    with np.errstate(over="ignore"), pytest.raises(InputError, match=r"X after standardization: expected finite values, "
                                                                       r"got inf at sample 1, timestep 2, feature 1"):
        tiny_predictor.predict_proba(X)
