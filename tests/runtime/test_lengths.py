"""Lengths are data (schema 3, docs/artifact.md "Inputs"): a variable-length artifact takes a ``lengths``
int64 (batch,) graph input; the runtime feeds it in every call, from a list of rows, from ``lengths``,
or from the trailing steps equal to a user's own Masking value; whatever lies past a length is ignored
and no value of the data means padding. A fixed-length artifact refuses ``lengths``.

Uses the tiny graphs of tests/tiny_models.py (no TensorFlow): ``masking=True`` writes the
lengths input and, behind it, the model's own Masking (steps all equal to the padding value are
counted out of the GRU's sequence_lens), as the exporter's graphs do.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.errors import InputError
from pipeline.runtime import Predictor

F = 3
USER_MASK = -1.0  # the Masking value of a "user's own" model (no scaling: own models scale inside)


@pytest.fixture(scope="module", params=["binary", "multiclass", "multilabel"])
def variable(request, tmp_path_factory, tiny_model_factory):
    """A gru-build-like variable-length model (masking.mask_value null) of each task."""
    folder = tmp_path_factory.mktemp(f"variable_{request.param}") / "exported"
    return Predictor.load(tiny_model_factory(folder, masking=True, task=request.param))


@pytest.fixture(scope="module")
def user_masked(tmp_path_factory, tiny_model_factory):
    """A user's own Masking(mask_value=-1) model: mask_value in the manifest, no scaling outside."""
    folder = tiny_model_factory(tmp_path_factory.mktemp("user_masked") / "exported", masking=True,
                              mask_value=USER_MASK, preprocessing={"type": "none"})
    return Predictor.load(folder)


def _rows(n=6, t=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(1.0, 2.0, (n, t, F)).astype(np.float32)
    lengths = rng.integers(1, t + 1, n)
    lengths[0] = t  # one full row
    return X, lengths.astype(np.int64)


def test_manifest_and_graph_have_the_lengths_input(variable):
    assert variable.lengths_name == "lengths" and variable.manifest["input"]["lengths"] == "lengths"
    assert variable.mask_value is None and variable.manifest["masking"]["padding"] == "lengths"
    names = [i.name for i in variable._session.get_inputs()]
    assert names == ["x", "lengths"]
    assert variable.unrolled_timesteps is None and variable.debug_info()["fused"]["used"] is False


def test_list_equals_padded_with_lengths_equals_each_row_alone(variable):
    X, lengths = _rows()
    padded = variable.predict_proba(X, lengths)
    as_list = variable.predict_proba([X[i, :n] for i, n in enumerate(lengths)])
    alone = np.concatenate([variable.predict_proba(X[i:i + 1, :n]) for i, n in enumerate(lengths)])
    assert padded.shape == ((len(X),) if variable.task == "binary" else (len(X), 3))
    assert np.array_equal(padded, as_list)
    assert np.array_equal(padded, alone)
    # and what plain onnxruntime gives for model.onnx fed x and lengths directly
    sess = ort.InferenceSession(str(variable.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    plain = sess.run(None, {"x": X, "lengths": lengths})[0]
    assert np.array_equal(plain.reshape(padded.shape), padded)
    # the rows differ from their full-length versions: the lengths were used
    short = lengths < X.shape[1]
    assert short.any() and (np.abs(variable.predict_proba(X) - padded).reshape(len(X), -1)[short].max(axis=1) > 1e-4).all()


@pytest.mark.parametrize("garbage", ["nan", "inf", "large", "random", "float64 beyond float32"])
def test_garbage_past_each_length_gives_identical_outputs(variable, garbage):
    X, lengths = _rows(seed=1)
    want = variable.predict_proba(X, lengths)
    G = X.astype(np.float64) if garbage == "float64 beyond float32" else X.copy()
    rng = np.random.default_rng(2)
    for i, n in enumerate(lengths):
        tail = G[i, n:]
        tail[...] = {"nan": np.nan, "inf": -np.inf, "large": 3.0e38, "float64 beyond float32": 1e300}.get(
            garbage, 0.0) if garbage != "random" else rng.uniform(-1e30, 1e30, tail.shape)
    before = G.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        got = variable.predict_proba(G, lengths)
    assert np.array_equal(got, want)
    assert np.array_equal(G, before, equal_nan=True), "the caller's array was written to"


def test_chunked_and_threaded_paths_feed_the_lengths(tmp_path, variable):
    """Batches beyond SMALL_BATCH are cut into chunks run by worker threads: each chunk gets its own lengths."""
    from pipeline.runtime import predictor as predictor_module

    rng = np.random.default_rng(3)
    n, t = 3 * predictor_module.CHUNK_MAX + 5, 12
    X = rng.normal(0, 1, (n, t, F)).astype(np.float32)
    lengths = rng.integers(1, t + 1, n).astype(np.int64)
    threaded = Predictor.load(variable.model_dir, threads=2).predict_proba(X, lengths)
    single = Predictor.load(variable.model_dir, threads=1).predict_proba(X, lengths)
    small = np.concatenate([variable.predict_proba(X[a:a + 8], lengths[a:a + 8]) for a in range(0, n, 8)])
    assert np.array_equal(threaded, single) and np.array_equal(threaded, small)


@pytest.mark.parametrize("where", ["inner", "last"])
def test_a_real_all_zero_step_is_data(variable, where):
    """All-zero raw steps were padding before schema 3; now they are ordinary values of a real step."""
    X, _ = _rows(n=2, t=6, seed=4)
    t = 2 if where == "inner" else 5
    X[:, t] = 0.0
    full = variable.predict_proba(X)  # mask_value null: no lengths means every row is full length
    assert np.array_equal(full, variable.predict_proba(X, np.full(2, 6)))
    assert np.array_equal(full, variable.predict_proba(list(X)))
    dropped = variable.predict_proba(np.delete(X, t, axis=1))  # the same rows without that step
    assert (np.abs(full - dropped).reshape(2, -1).max(axis=1) > 1e-4).all()


@pytest.mark.parametrize("lengths, match", [
    (np.array([0, 3]), r"lengths: expected values in \[1, 6\] \(the timesteps of X\), got 0 at sample 0"),
    (np.array([3, 7]), r"lengths: expected values in \[1, 6\] \(the timesteps of X\), got 7 at sample 1"),
    (np.array([-1, 3]), r"got -1 at sample 0"),
    (np.array([3, 3, 3]), r"lengths: expected 2 lengths, one per row of X, got 3"),
    (np.array([3]), r"lengths: expected 2 lengths, one per row of X, got 1"),
    ([2.5, 3], r"lengths: expected whole numbers, got 2.5 at sample 0"),
    ([3, float("nan")], r"lengths: expected whole numbers, got nan at sample 1"),
    ([3, float("inf")], r"lengths: expected whole numbers, got inf at sample 1"),
    (["3", "4"], r"lengths: expected \(2,\) integers, got strings"),
    ("34", r"lengths: expected shape \(2,\), one integer per row of X, got rank 0"),
    (np.array([True, True]), r"lengths: expected \(2,\) integers, got booleans"),
    (np.array([[3], [4]]), r"lengths: expected shape \(2,\), one integer per row of X, got rank 2 shape \(2, 1\)"),
    (np.array([3, 4], dtype=object), r"got Python objects"),
    (5, r"got rank 0"),
])
def test_bad_lengths_are_one_line_input_errors(variable, lengths, match):
    X, _ = _rows(n=2, t=6)
    with pytest.raises(InputError, match=match) as info:
        variable.predict_proba(X, lengths)
    assert "\n" not in str(info.value)


def test_whole_float_lengths_are_accepted(variable):
    X, lengths = _rows(seed=5)
    assert np.array_equal(variable.predict_proba(X, lengths.astype(np.float64)), variable.predict_proba(X, lengths))


def test_nan_on_a_real_step_is_still_refused(variable):
    X, _ = _rows(n=2, t=6)
    X[1, 2, 0] = np.nan
    with pytest.raises(InputError, match=r"expected finite values, got nan at sample 1, timestep 2, feature 0"):
        variable.predict_proba(X, np.array([6, 4]))
    assert variable.predict_proba(X, np.array([6, 2])).shape[0] == 2  # past the length: ignored


def test_lengths_to_a_fixed_length_artifact_are_refused(tiny_predictor):
    X, lengths = _rows(n=2, t=6)
    with pytest.raises(InputError, match=r"^lengths: this model has a fixed-length input \(no lengths input; "
                                         r"manifest input.lengths is null\): expected lengths=None") as info:
        tiny_predictor.predict_proba(X, lengths)
    assert "\n" not in str(info.value)
    # rows of different lengths still run as a list: each length group unpadded
    rows = [X[0, :6], X[1, :2]]
    want = np.concatenate([tiny_predictor.predict_proba(r[None]) for r in rows])
    assert np.array_equal(tiny_predictor.predict_proba(rows), want)


# ------------------------------------------------------------------ a user's own Masking value

def test_trailing_mask_valued_steps_are_the_padding(user_masked):
    assert user_masked.mask_value == USER_MASK
    X, lengths = _rows(seed=6)
    padded = X.copy()
    for i, n in enumerate(lengths):
        padded[i, n:] = USER_MASK
    want = user_masked.predict_proba(X, lengths)
    assert np.array_equal(user_masked.predict_proba(padded), want)  # lengths read off the trailing steps
    assert np.array_equal(user_masked.predict_proba([X[i, :n] for i, n in enumerate(lengths)]), want)


def test_a_row_of_padding_only_is_refused(user_masked):
    X, _ = _rows(n=3, t=5, seed=7)
    X[2] = USER_MASK
    with pytest.raises(InputError, match=r"^sample 2: every one of its 5 timesteps equals the mask value") as info:
        user_masked.predict_proba(X)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("how", ["no lengths", "lengths", "list", "trailing but lengths say real"])
def test_a_mask_valued_step_inside_the_real_part_is_refused(user_masked, how):
    X, _ = _rows(n=3, t=6, seed=8)
    t = 5 if how == "trailing but lengths say real" else 2
    X[1, t] = USER_MASK
    arg, lengths = (list(X), None) if how == "list" else (X, None if how == "no lengths" else np.full(3, 6))
    with pytest.raises(InputError, match=rf"^sample 1, timestep {t}: every value equals the mask value -1 of the "
                                         r"model's Masking layer on a real step") as info:
        user_masked.predict_proba(arg, lengths)
    assert "\n" not in str(info.value)
    # a step with one feature off the mask value is an ordinary step
    X[1, t, 0] = 0.5
    assert user_masked.predict_proba(arg if how != "list" else list(X), lengths).shape == (3,)


def test_cli_feeds_lengths_from_npz_and_long_csv(tmp_path, variable):
    """gru-predict: NPZ ``lengths`` and a long CSV (rows of their own length) give predict_proba's numbers."""
    from tests.runtime.test_properties import run_cli

    X, lengths = _rows(seed=9)
    want = variable.predict_proba(X, lengths)
    np.savez(tmp_path / "x.npz", X=X, lengths=lengths)
    with open(tmp_path / "x.csv", "w") as fh:
        fh.write("sample_id,t,a,b,c\n")
        for i, n in enumerate(lengths):
            for t in range(n):
                fh.write(f"s{i},{t}," + ",".join(repr(float(v)) for v in X[i, t]) + "\n")
    for name in ("x.npz", "x.csv"):
        rc, out, err = run_cli([variable.model_dir, tmp_path / name])
        assert rc == 0, err
        lines = out.splitlines()
        got = np.array([[float(v) for v in (row.split(",")[1:2] if variable.task == "binary" else row.split(",")[2:])]
                        for row in lines[1:]])
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-8, atol=0)  # printed with 9 digits
    manifest = json.loads((variable.model_dir / "manifest.json").read_text())
    assert manifest["masking"]["mask_value"] is None


# ------------------------------------------------------------------ streams: never padded

def test_stream_steps_are_all_real(tmp_path, tiny_model_factory):
    """stream.onnx has no lengths input: an all-zero step is data (gru-build model), a step equal to a
    user's mask value is refused (Keras would skip it) and leaves the state unchanged."""
    built = Predictor.load(tiny_model_factory(tmp_path / "built", masking=True, stream=True))
    X, _ = _rows(n=1, t=5, seed=11)
    X[0, 3] = 0.0
    with built.stream() as s:
        for row in X[0]:
            p = s.push(row[None])
    np.testing.assert_allclose(p, built.predict_proba(X)[0], atol=1e-6, rtol=0)
    user = Predictor.load(tiny_model_factory(tmp_path / "user", masking=True, mask_value=USER_MASK,
                                             preprocessing={"type": "none"}, stream=True))
    with user.stream(n_streams=2) as s:
        s.push(np.ones((2, 2, F), np.float32))
        before = s.get_state()
        steps = np.ones((2, 3, F), np.float32)
        steps[1, 2] = USER_MASK
        with pytest.raises(InputError, match=r"^steps: stream 1 timestep 2: every value equals the mask value -1") as info:
            s.push(steps)
        assert "\n" not in str(info.value)
        assert all(np.array_equal(before[k], v) for k, v in s.get_state().items())
