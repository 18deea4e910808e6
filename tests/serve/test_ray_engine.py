"""gru-serve --engine ray: the V2 REST app as a Ray Serve deployment with two replicas on a local Ray
cluster, answered through tritonclient.http and compared with Predictor; sequences are refused with
the reason (no affinity across replicas); SIGTERM shuts it down with exit 0."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.runtime import Predictor

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve", reason="needs the serve-ray extra")
th = pytest.importorskip("tritonclient.http", reason="needs the serve-test extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import EXPORTED, ROOT  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_on_ray_serve(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.serve.cli", str(EXPORTED), "--engine", "ray",
                             "--replicas", "2", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "ready:" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(180) and proc.poll() is None, "".join(lines)[-3000:]
        assert re.search(r"\(Ray Serve, 2 of 2 replicas running\)", "".join(lines)), "".join(lines)
        p = Predictor.load(EXPORTED)
        X = np.random.default_rng(0).normal(size=(40, 12, p.n_features)).astype(np.float32)
        want = p.predict_proba(X)
        client = th.InferenceServerClient(f"127.0.0.1:{port}", concurrency=8)
        assert client.is_server_ready()
        pending = []
        for i in range(0, 40, 2):
            inp = th.InferInput(p.input_name, [2, 12, p.n_features], "FP32")
            inp.set_data_from_numpy(X[i:i + 2])
            pending.append((i, client.async_infer("exported", [inp])))
        for i, req in pending:
            np.testing.assert_allclose(req.get_result().as_numpy("probability"), want[i:i + 2], rtol=0, atol=1e-6)
        inp = th.InferInput(p.input_name, [1, 1, p.n_features], "FP32")
        inp.set_data_from_numpy(X[:1, :1])
        with pytest.raises(InferenceServerException, match="sequences are not served with --engine ray and 2 replicas"):
            client.infer("exported", [inp], sequence_id=1, sequence_start=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed after 90 s"
        time.sleep(0.5)
    assert code == 0, "".join(lines)[-3000:]
    assert "stopped (Ray Serve shut down)" in "".join(lines)
