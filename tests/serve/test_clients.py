"""gru-serve through Triton's own clients (tritonclient.http and tritonclient.grpc, nobody here wrote them):
metadata, infer with JSON and with binary data, sequences with start/end, multi-class and
variable-length models, and the errors; every number compared with ``Predictor.predict_proba``."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime import Predictor

th = pytest.importorskip("tritonclient.http", reason="needs the serve-test extra")
tg = pytest.importorskip("tritonclient.grpc", reason="needs the serve-test extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import EXPORTED  # noqa: E402

ATOL = 1e-6


def _rows(n, T, F, seed=0):
    return np.random.default_rng(seed).normal(size=(n, T, F)).astype(np.float32)  # (batch, time, features)


def _http_infer(client, model, name, X, binary=True, outputs=None, **kw):
    inp = th.InferInput(name, list(X.shape), "FP32" if X.dtype == np.float32 else "INT64")
    inp.set_data_from_numpy(X, binary_data=binary)
    extra = [] if "lengths" not in kw else [kw.pop("lengths")]
    return client.infer(model, [inp, *extra], outputs=outputs, **kw)


def _grpc_infer(client, model, name, X, **kw):
    inp = tg.InferInput(name, list(X.shape), "FP32" if X.dtype == np.float32 else "INT64")
    inp.set_data_from_numpy(X)
    return client.infer(model, [inp], **kw)


def test_metadata_over_http_and_grpc(start_server):
    server = start_server()
    p = Predictor.load(EXPORTED)
    http = th.InferenceServerClient(server.url)
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("exported")
    assert not http.is_model_ready("nope")
    meta = http.get_model_metadata("exported")
    assert meta["inputs"] == [{"name": p.input_name, "datatype": "FP32", "shape": [-1, -1, p.n_features]}]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]
    assert meta["versions"] == ["1"]
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    grpc = tg.InferenceServerClient(server.grpc_url)
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("exported")
    gmeta = grpc.get_model_metadata("exported", as_json=True)
    assert gmeta["inputs"][0]["shape"] == ["-1", "-1", str(p.n_features)]  # int64 fields: strings in JSON
    assert grpc.get_server_metadata(as_json=True)["name"] == "gru-serve"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="no version '7'"):
        http.get_model_metadata("exported", model_version="7")
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        grpc.get_model_metadata("nope")
    code, err = server.stop()
    assert code == 0 and "stopped (drained)" in err


def test_infer_http_json_binary_and_grpc_equal_predictor(start_server):
    server = start_server()
    p = Predictor.load(EXPORTED)
    X = _rows(7, 50, p.n_features)
    want = p.predict_proba(X)
    http = th.InferenceServerClient(server.url)
    got_bin = _http_infer(http, "exported", p.input_name, X).as_numpy("probability")
    got_json = _http_infer(http, "exported", p.input_name, X, binary=False,
                           outputs=[th.InferRequestedOutput("probability", binary_data=False)]).as_numpy("probability")
    got_grpc = _grpc_infer(tg.InferenceServerClient(server.grpc_url), "exported", p.input_name, X).as_numpy("probability")
    for got in (got_bin, got_json, got_grpc):
        assert got.shape == (7,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    # rows of another length (the model's time axis is dynamic): each request gets its own
    X2 = _rows(3, 20, p.n_features, seed=1)
    np.testing.assert_allclose(_http_infer(http, "exported", p.input_name, X2).as_numpy("probability"),
                               p.predict_proba(X2), rtol=0, atol=ATOL)


def test_sequences_over_http_and_grpc_equal_the_whole_sequence(start_server):
    server = start_server()
    p = Predictor.load(EXPORTED)
    X = _rows(2, 30, p.n_features, seed=3)
    http = th.InferenceServerClient(server.url)
    grpc = tg.InferenceServerClient(server.grpc_url)
    chunks = [(0, 1), (1, 5), (5, 6), (6, 17), (17, 30)]
    # two sequences interleaved, one over each protocol: states never cross ids
    for j, (a, b) in enumerate(chunks):
        kw = dict(sequence_start=j == 0, sequence_end=j == len(chunks) - 1)
        r1 = _http_infer(http, "exported", p.input_name, X[:1, a:b], sequence_id=11, **kw).as_numpy("probability")
        r2 = _grpc_infer(grpc, "exported", p.input_name, X[1:, a:b], sequence_id="client-b", **kw).as_numpy("probability")
        np.testing.assert_allclose(r1, p.predict_proba(X[:1, :b]), rtol=0, atol=ATOL)
        np.testing.assert_allclose(r2, p.predict_proba(X[1:, :b]), rtol=0, atol=ATOL)
    # both ended: their ids are gone
    with pytest.raises(InferenceServerException, match="unknown or evicted sequence id"):
        _http_infer(http, "exported", p.input_name, X[:1, :1], sequence_id=11)
    with pytest.raises(InferenceServerException, match="unknown or evicted sequence id"):
        _grpc_infer(grpc, "exported", p.input_name, X[:1, :1], sequence_id="client-b")
    # a restart begins from zeros again
    r = _http_infer(http, "exported", p.input_name, X[1:, :4], sequence_id=11, sequence_start=True).as_numpy("probability")
    np.testing.assert_allclose(r, p.predict_proba(X[1:, :4]), rtol=0, atol=ATOL)
    with pytest.raises(InferenceServerException, match="expected one row of steps"):
        _http_infer(http, "exported", p.input_name, X[:, :2], sequence_id=11)


def test_multiclass_model_returns_every_class(start_server, multiclass_dir):
    server = start_server((multiclass_dir,))
    p = Predictor.load(multiclass_dir)
    X = _rows(5, 9, p.n_features, seed=4)
    http = th.InferenceServerClient(server.url)
    meta = http.get_model_metadata("triple")
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["parameters"]["class_names"] == [str(c) for c in p.class_names]
    got = _http_infer(http, "triple", p.input_name, X).as_numpy("probabilities")
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, p.predict_proba(X), rtol=0, atol=ATOL)
    got = _grpc_infer(tg.InferenceServerClient(server.grpc_url), "triple", p.input_name, X).as_numpy("probabilities")
    np.testing.assert_allclose(got, p.predict_proba(X), rtol=0, atol=ATOL)
    for t in range(9):
        r = _http_infer(http, "triple", p.input_name, X[2:3, t:t + 1], sequence_id=5,
                        sequence_start=t == 0).as_numpy("probabilities")
        assert r.shape == (1, 3)
        np.testing.assert_allclose(r, p.predict_proba(X[2:3, :t + 1]), rtol=0, atol=ATOL)


def test_variable_length_model_takes_lengths(start_server, variable_dir):
    server = start_server((variable_dir,))
    p = Predictor.load(variable_dir)
    X = _rows(4, 12, p.n_features, seed=5)
    lengths = np.array([12, 3, 7, 1], np.int64)
    http = th.InferenceServerClient(server.url)
    meta = http.get_model_metadata("varlen")
    assert meta["inputs"][1] == {"name": "lengths", "datatype": "INT64", "shape": [-1]}
    lin = th.InferInput("lengths", [4], "INT64")
    lin.set_data_from_numpy(lengths)
    got = _http_infer(http, "varlen", p.input_name, X, lengths=lin).as_numpy("probability")
    np.testing.assert_allclose(got, p.predict_proba(X, lengths), rtol=0, atol=ATOL)
    for i, n in enumerate(lengths):  # each row alone, unpadded
        np.testing.assert_allclose(got[i], p.predict_proba(X[i:i + 1, :n])[0], rtol=0, atol=ATOL)
    # no stream graph: sequences are refused with the manifest's reason
    with pytest.raises(InferenceServerException, match="cannot run sequences"):
        _http_infer(http, "varlen", p.input_name, X[:1, :2], sequence_id=1, sequence_start=True)


def test_token_model_takes_int64_ids(start_server, tokens_dir):
    server = start_server((tokens_dir,))
    p = Predictor.load(tokens_dir)
    ids = np.random.default_rng(6).integers(0, 40, (6, 11)).astype(np.int64)  # (batch, time)
    ids[0, :3], ids[1, -1] = 0, 39                                            # both ends of the vocabulary
    http = th.InferenceServerClient(server.url)
    meta = http.get_model_metadata("tokens")
    assert meta["inputs"] == [{"name": p.input_name, "datatype": "INT64", "shape": [-1, -1]}]
    want = p.predict_proba(ids)
    for binary in (True, False):
        got = _http_infer(http, "tokens", p.input_name, ids, binary=binary).as_numpy("probabilities")
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    grpc = tg.InferenceServerClient(server.grpc_url)
    np.testing.assert_allclose(_grpc_infer(grpc, "tokens", p.input_name, ids).as_numpy("probabilities"), want,
                               rtol=0, atol=ATOL)
    with pytest.raises(InferenceServerException, match=r"token ids in \[0, 39\], got ids in \[0, 40\]"):
        _http_infer(http, "tokens", p.input_name, np.array([[0, 40]], np.int64))
    with pytest.raises(InferenceServerException, match="expected datatype INT64, got FP32"):
        _http_infer(http, "tokens", p.input_name, ids.astype(np.float32))
    code, err = server.stop()
    assert code == 0, err


def test_request_errors_are_one_sentence(start_server):
    server = start_server()
    p = Predictor.load(EXPORTED)
    http = th.InferenceServerClient(server.url)
    grpc = tg.InferenceServerClient(server.grpc_url)
    X = _rows(2, 5, p.n_features)
    cases = [
        (lambda: _http_infer(http, "exported", p.input_name, X.astype(np.float64).astype(np.float32)[:, :, :3]),
         r"expected shape \[-1, -1, 8\].*got \[2, 5, 3\]"),
        (lambda: _http_infer(http, "exported", "wrong", X), r"inputs: expected \['x'\]"),
        (lambda: _http_infer(http, "missing", p.input_name, X), "unknown model 'missing'"),
        (lambda: _grpc_infer(grpc, "exported", p.input_name, X[:, :, :3]), r"expected shape"),
        (lambda: _http_infer(http, "exported", p.input_name, np.full_like(X, np.nan)), "expected finite values"),
        (lambda: _grpc_infer(grpc, "exported", p.input_name, np.full_like(X, np.inf)), "expected finite values"),
    ]
    for call, pattern in cases:
        with pytest.raises(InferenceServerException, match=pattern):
            call()
    inp = th.InferInput(p.input_name, list(X.shape), "FP64")
    inp.set_data_from_numpy(X.astype(np.float64))
    with pytest.raises(InferenceServerException, match="expected datatype FP32, got FP64"):
        http.infer("exported", [inp])
    ginp = tg.InferInput(p.input_name, list(X.shape), "INT64")
    ginp.set_data_from_numpy(X.astype(np.int64))
    with pytest.raises(InferenceServerException, match="expected datatype FP32, got INT64"):
        grpc.infer("exported", [ginp])
    # the server is still fine
    np.testing.assert_allclose(_http_infer(http, "exported", p.input_name, X).as_numpy("probability"),
                               p.predict_proba(X), rtol=0, atol=ATOL)


def _top(P, n, names):
    order = np.argsort(-P, axis=1, kind="stable")[:, :n]
    return [[(float(P[r, c]), int(c), names[c]) for c in row] for r, row in enumerate(order)]


def _parsed(arr):
    text = [[s.decode() if isinstance(s, bytes) else s for s in row] for row in arr]  # JSON gives str
    return [[(float(v), int(i), name) for v, i, name in (s.split(":", 2) for s in row)] for row in text]


def test_classification_extension_over_http_and_grpc(start_server, multiclass_dir):
    """Triton's classification extension: class_count=n gives the n best classes as "p:index:name", best first,
    with the probabilities of Predictor (a binary model's p(class 1) read as the two classes (1 - p, p))."""
    server = start_server((EXPORTED, multiclass_dir))
    http = th.InferenceServerClient(server.url)
    grpc = tg.InferenceServerClient(server.grpc_url)
    for model, folder, n in (("exported", EXPORTED, 2), ("triple", multiclass_dir, 2), ("triple", multiclass_dir, 5)):
        p = Predictor.load(folder)
        X = _rows(4, 7, p.n_features, seed=8)
        proba = p.predict_proba(X)
        P = np.stack([1 - proba, proba], axis=1) if p.task == "binary" else proba
        want = _top(P, n, [str(c) for c in p.class_names])
        out = "probability" if p.task == "binary" else "probabilities"
        for binary in (True, False):
            got = _http_infer(http, model, p.input_name, X, outputs=[th.InferRequestedOutput(out, binary, n)])
            arr = got.as_numpy(out)
            assert arr.shape == (4, min(n, P.shape[1]))
            for g, w in zip(_parsed(arr), want):
                assert [x[1:] for x in g] == [x[1:] for x in w]
                np.testing.assert_allclose([x[0] for x in g], [x[0] for x in w], rtol=0, atol=ATOL)
        inp = tg.InferInput(p.input_name, list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        arr = grpc.infer(model, [inp], outputs=[tg.InferRequestedOutput(out, class_count=n)]).as_numpy(out)
        assert [[x[1:] for x in row] for row in _parsed(arr)] == [[x[1:] for x in row] for row in want]
    with pytest.raises(InferenceServerException, match="classification expects a positive class count"):
        X = _rows(1, 3, 8)
        _http_infer(http, "exported", "x", X, outputs=[th.InferRequestedOutput("probability", True, -1)])
