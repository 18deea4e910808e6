"""gru-serve under load and under faults, with raw HTTP (http.client, sockets): every request answered once
and exactly, nothing lost; a client killed mid-request, malformed and oversized bodies, wrong dtypes
and shapes, queue and sequence limits, idle eviction, metrics, and SIGTERM during load.

Bounded: 127.0.0.1 only, a fixed number of requests per client, and timeouts on every socket."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from pipeline.runtime import Predictor

from conftest import EXPORTED

ATOL = 1e-6


def _body(X: np.ndarray, name: str = "x", **params) -> bytes:
    req = {"inputs": [{"name": name, "shape": list(X.shape), "datatype": "FP32", "data": X.reshape(-1).tolist()}]}
    if params:
        req["parameters"] = params
    return json.dumps(req).encode()


def _post(conn: http.client.HTTPConnection, body: bytes, model: str = "exported", headers=None):
    conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _binary_body(X: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": X.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + X.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.slow
def test_load_64_clients_x_200_requests_each_answered_once_and_exactly(start_server):
    """64 concurrent keep-alive clients, 200 single-row requests each (12,800 in all), every row distinct:
    each answer is its own row's probability (binary responses, decoded by hand)."""
    server = start_server((EXPORTED,), "--max-batch", "64")
    p = Predictor.load(EXPORTED)
    clients, per_client, T = 64, 200, 20
    X = np.random.default_rng(7).normal(size=(clients * per_client, T, p.n_features)).astype(np.float32)
    want = p.predict_proba(X)
    got = np.full(len(X), np.nan, np.float32)
    answered = np.zeros(len(X), np.int32)
    failures: list = []

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        try:
            for r in range(per_client):
                i = c * per_client + r
                body, headers = _binary_body(X[i:i + 1])
                status, data = _post(conn, body, headers=headers)
                if status != 200:
                    failures.append((i, status, data[:200]))
                    continue
                n = int(json.loads(data[:data.index(b"}]}") + 3])["outputs"][0]["parameters"]["binary_data_size"])
                got[i] = np.frombuffer(data[-n:], "<f4")[0]
                answered[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((c, "exception", repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.monotonic() - t0
    assert not failures, failures[:5]
    assert (answered == 1).all(), f"{int((answered != 1).sum())} requests not answered exactly once"
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    metrics = _get(server, "/metrics").decode()
    batches = _metric(metrics, 'gru_serve_batch_rows_count{model="exported"}')
    assert _metric(metrics, 'gru_serve_batch_rows_sum{model="exported"}') >= clients * per_client
    print(f"{clients * per_client} requests in {elapsed:.1f} s, {batches:.0f} native calls")
    code, err = server.stop()
    assert code == 0, err


def _get(server, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("GET", path)
    data = conn.getresponse().read()
    conn.close()
    return data


def _metric(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{key} not in /metrics")


def test_faults_leave_the_server_serving(start_server):
    server = start_server((EXPORTED,), "--max-request-bytes", "100000")
    p = Predictor.load(EXPORTED)
    X = np.random.default_rng(1).normal(size=(2, 6, p.n_features)).astype(np.float32)
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)

    def error_of(status_body):
        status, body = status_body
        return status, json.loads(body)["error"]

    # malformed JSON, a body that is no object, missing inputs, a wrong dtype, a wrong shape, too few values
    assert error_of(_post(conn, b"{not json")) [0] == 400
    assert error_of(_post(conn, b"[1, 2]")) == (400, "request body: expected a JSON object, got list")
    assert error_of(_post(conn, b"{}"))[1].startswith("inputs: expected a non-empty list of tensors")
    wrong = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 8], "datatype": "BYTES", "data": ["a"] * 8}]})
    assert error_of(_post(conn, wrong.encode()))[1].startswith("input 'x': expected a numeric datatype")
    short = json.dumps({"inputs": [{"name": "x", "shape": [1, 2, 8], "datatype": "FP32", "data": [0.0] * 15}]})
    assert error_of(_post(conn, short.encode())) == (400, "input 'x': shape [1, 2, 8] needs 16 values, got 15")
    assert error_of(_post(conn, _body(X[:, :, :5]))) == (
        400, "input 'x': expected shape [-1, -1, 8] with at least one row and one step, got [2, 6, 5]")
    body, headers = _binary_body(X)
    headers["Inference-Header-Content-Length"] = str(len(body) + 5)
    assert error_of(_post(conn, body, headers=headers))[1].startswith("Inference-Header-Content-Length: expected")
    assert error_of(_post(conn, b"{}", model="nope")) == (
        404, "unknown model 'nope'; this server has ['exported']")
    # an oversized body: 413, and the server closes that connection
    status, data = _post(conn, b" " * 200_000)
    assert status == 413 and "expected at most 100000 bytes" in json.loads(data)["error"]
    conn.close()
    # a client killed mid-request: headers and half a body, then the socket closes
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
        body = _body(X)
        s.sendall(b"POST /v2/models/exported/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body[: len(body) // 2])
        s.close()
    # a client that sends a whole request and leaves before the answer
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    body = _body(X)
    s.sendall(b"POST /v2/models/exported/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.close()
    # still serving, exactly
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    status, data = _post(conn, _body(X))
    assert status == 200
    np.testing.assert_allclose(json.loads(data)["outputs"][0]["data"], p.predict_proba(X), rtol=0, atol=ATOL)
    metrics = _get(server, "/metrics").decode()
    assert _metric(metrics, 'gru_serve_errors_total{model="exported",protocol="http",reason="too_large"}') == 1
    assert _metric(metrics, 'gru_serve_errors_total{model="",protocol="http",reason="not_found"}') == 1
    assert _metric(metrics, 'gru_serve_live_sequences{model="exported"}') == 0
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_sequence_limits_eviction_and_capacity(start_server):
    server = start_server((EXPORTED,), "--max-sequences", "2", "--sequence-idle-s", "1")
    X = np.random.default_rng(2).normal(size=(1, 3, 8)).astype(np.float32)
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    seq = lambda sid, **kw: _post(conn, _body(X, sequence_id=sid, **kw))  # noqa: E731
    assert seq(1, sequence_start=True)[0] == 200
    assert seq(2, sequence_start=True)[0] == 200
    status, data = seq(3, sequence_start=True)
    assert status == 503 and "2 sequences are live (--max-sequences)" in json.loads(data)["error"]
    assert _metric(_get(server, "/metrics").decode(), 'gru_serve_live_sequences{model="exported"}') == 2
    assert seq(1, sequence_end=True)[0] == 200  # ends id 1: room for id 3
    assert seq(3, sequence_start=True)[0] == 200
    time.sleep(2.5)  # ids 2 and 3 go idle past 1 s
    assert seq(4, sequence_start=True)[0] == 200  # the idle ones are evicted to make room
    status, data = seq(2)
    assert status == 400 and "unknown or evicted sequence id" in json.loads(data)["error"]
    status, data = _post(conn, _body(X, sequence_id=True))
    assert status == 400 and "sequence_id: expected an unsigned integer or a string" in json.loads(data)["error"]
    conn.close()
    assert server.stop()[0] == 0


def test_sigterm_during_load_drains_and_exits_0(start_server):
    """SIGTERM while 16 clients send requests: every request that got an answer got a right one (200) or a
    clear refusal (503 shutting down); none hangs; the process exits 0 after draining."""
    server = start_server()
    p = Predictor.load(EXPORTED)
    X = np.random.default_rng(3).normal(size=(64, 10, p.n_features)).astype(np.float32)
    want = p.predict_proba(X)
    outcomes: list = []
    stop = threading.Event()

    def client(c: int) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
            for r in range(400):
                if stop.is_set() and r % 5 == 0:
                    break
                i = (c * 7 + r) % len(X)
                status, data = _post(conn, _body(X[i:i + 1]))
                if status == 200:
                    ok = abs(json.loads(data)["outputs"][0]["data"][0] - want[i]) <= ATOL
                    outcomes.append("ok" if ok else "wrong")
                else:
                    outcomes.append((status, json.loads(data)["error"]))
        except (ConnectionError, http.client.HTTPException, OSError):
            outcomes.append("closed")  # the server stopped listening: refused, never a wrong answer

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    code, err = server.stop()
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert code == 0, err
    assert "stopped (drained)" in err
    assert "wrong" not in outcomes
    assert outcomes.count("ok") > 50
    others = {o for o in outcomes if o not in ("ok", "closed")}
    assert all(o[0] == 503 for o in others), others


def test_access_log_is_off_by_default_and_json_lines_when_asked(start_server):
    X = np.zeros((1, 2, 8), np.float32)
    quiet = start_server()
    conn = http.client.HTTPConnection("127.0.0.1", quiet.http_port, timeout=30)
    assert _post(conn, _body(X))[0] == 200
    conn.close()
    code, err = quiet.stop()
    assert code == 0 and len(err.strip().splitlines()) == 2, err  # the ready line and the stopped line only
    logged = start_server((EXPORTED,), "--access-log")
    conn = http.client.HTTPConnection("127.0.0.1", logged.http_port, timeout=30)
    assert _post(conn, _body(X))[0] == 200
    assert _post(conn, b"{}", model="nope")[0] == 404
    conn.close()
    code, err = logged.stop()
    assert code == 0, err
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/v2/models/exported/infer", 200), ("POST", "/v2/models/nope/infer", 404)]
    assert entries[0]["model"] == "exported" and entries[0]["client"] == "127.0.0.1" and entries[0]["ms"] >= 0


def test_concurrent_sequences_are_stepped_together_and_never_cross(start_server):
    """24 clients, each its own sequence id, push 12 chunks of 1-3 steps at the same time: every answer is
    predict_proba of that id's own prefix (1e-6), and the server stepped several ids per native call."""
    server = start_server()
    p = Predictor.load(EXPORTED)
    clients, T = 24, 24
    X = np.random.default_rng(9).normal(size=(clients, T, p.n_features)).astype(np.float32)
    cuts = [0, 1, 3, 4, 6, 9, 10, 12, 15, 18, 19, 21, 24]
    want = {(c, b): p.predict_proba(X[c:c + 1, :b])[0] for c in range(clients) for b in cuts[1:]}
    bad: list = []

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
            status, data = _post(conn, _body(X[c:c + 1, a:b], sequence_id=f"sensor-{c}", sequence_start=j == 0,
                                             sequence_end=b == T))
            got = json.loads(data)["outputs"][0]["data"][0] if status == 200 else None
            if got is None or abs(got - want[(c, b)]) > ATOL:
                bad.append((c, b, status, got, float(want[(c, b)])))
        conn.close()

    before = _metric(_get(server, "/metrics").decode(), 'gru_serve_batch_rows_count{model="exported"}')
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not bad, bad[:5]
    metrics = _get(server, "/metrics").decode()
    calls = _metric(metrics, 'gru_serve_batch_rows_count{model="exported"}') - before
    assert calls < clients * 12, f"{calls:.0f} batches for {clients * 12} sequence requests: none stepped together"
    assert _metric(metrics, 'gru_serve_live_sequences{model="exported"}') == 0  # every id ended
    assert server.stop()[0] == 0
