"""``make bench-serve``: gru-serve against MLServer (adaptive batching, onnxruntime on the same model.onnx),
a naive one-request-one-call server, and the in-process Predictor as the ceiling; side by side, twice.

Usage: python tools/bench_serve.py [MODEL_DIR] [--runs 2] [--scale 1.0] [--update-docs] [--quick]

For each server: single-row requests (1, T, F) at concurrency 1, 8 and 64, and 64-row requests at
concurrency 8, all V2 JSON bodies (gru-serve also with binary tensor data). The load generator is one
asyncio process on keep-alive sockets to 127.0.0.1, the same for every server, sharing the CPUs with
it; each measurement is bounded in requests and in seconds, after a warm-up. Reported: requests/s,
rows/s, p50 and p99 latency, and the issue's targets (PASS/MISS):

    c=64 single rows: gru-serve >= 2x MLServer's requests/s, with a lower p99
    c=1 single rows:  gru-serve p50 <= 1 ms
    c=8 64-row requests: gru-serve rows/s >= 40% of the in-process Predictor at B=64

MLServer 1.7.1 runs from its own virtualenv (build/mlserver-venv, created on first use from the
package index; its dependencies would clash with ours), with ``parallel_workers: 0`` (its workers
crash at start with uvloop here), ``max_batch_size`` 64 and ``max_batch_time`` 2 ms, bound to
127.0.0.1, its model a 20-line MLModel over onnxruntime written by this script. The naive server is
the standard library's ThreadingHTTPServer calling ``Predictor.predict_proba`` per request
(``--naive-server`` runs it). Every server's answers are checked against Predictor before timing.
Writes bench-results/serve.{json,md}; ``--update-docs`` writes both runs into docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

MLSERVER_VERSION = "1.7.1"
MLSERVER_VENV = ROOT / "build" / "mlserver-venv"
T = 50  # timesteps per row
CASES = [  # (label, rows per request, concurrency, requests, seconds at most)
    ("1 row, c=1", 1, 1, 2000, 20),
    ("1 row, c=8", 1, 8, 4000, 20),
    ("1 row, c=64", 1, 64, 8000, 25),
    ("64 rows, c=8", 64, 8, 800, 25),
]

MLSERVER_MODEL = '''
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(self.settings.parameters.uri, so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        p = self.sess.run(None, {self.input: x})[0].reshape(x.shape[0], -1)[:, 0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probability", p)])
'''


# ------------------------------------------------------------------ servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_mlserver_venv() -> Path:
    """build/mlserver-venv with MLServer and our onnxruntime and numpy versions (created once, ~40 s)."""
    py = MLSERVER_VENV / "bin" / "python"
    stamp = MLSERVER_VENV / f".mlserver-{MLSERVER_VERSION}"
    if stamp.exists():
        return py
    from importlib.metadata import version

    print(f"== {MLSERVER_VENV}: MLServer {MLSERVER_VERSION} in its own virtualenv (~40 s, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"mlserver=={MLSERVER_VERSION}",
                    f"onnxruntime=={version('onnxruntime')}", f"numpy=={version('numpy')}"], check=True)
    stamp.touch()
    return py


def start_mlserver(model_dir: Path, work: Path) -> tuple[subprocess.Popen, int]:
    py = ensure_mlserver_venv()
    port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    folder = work / "mlserver"
    (folder / "exported").mkdir(parents=True, exist_ok=True)
    (folder / "exported" / "onnx_model.py").write_text(MLSERVER_MODEL)
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "metrics_endpoint": None, "gzip_enabled": False}))
    (folder / "exported" / "model-settings.json").write_text(json.dumps({
        "name": "exported", "implementation": "onnx_model.OnnxModel", "max_batch_size": 64,
        "max_batch_time": 0.002, "parameters": {"uri": str(model_dir / "model.onnx")}}))
    proc = subprocess.Popen([str(py.parent / "mlserver"), "start", str(folder)], cwd=folder / "exported",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(folder / "exported")})
    _wait_ready(port, proc, "MLServer")
    return proc, port


def start_gru_serve(model_dir: Path, flags: list[str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.serve.cli", str(model_dir), "--port", str(port),
                             "--grpc-port", "-1", *flags], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_ready(port, proc, "gru-serve")
    return proc, port


def start_naive(model_dir: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, str(model_dir), "--naive-server", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(port, proc, "the naive server")
    return proc, port


def naive_server(model_dir: str, port: int) -> int:
    """One request, one predict_proba call: what one writes around Predictor without a batcher."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.runtime import Predictor

    p = Predictor.load(model_dir)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms a request)

        def log_message(self, *a):
            pass

        def _reply(self, status: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._reply(200, {"ready": True})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            t = req["inputs"][0]
            X = np.asarray(t["data"], np.float32).reshape(t["shape"])
            proba = p.predict_proba(X)
            self._reply(200, {"model_name": "exported", "outputs": [
                {"name": "probability", "datatype": "FP32", "shape": list(proba.shape), "data": proba.tolist()}]})

    ThreadingHTTPServer.request_queue_size = 256  # the default backlog of 5 resets 64 concurrent clients
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# ------------------------------------------------------------------ load
def json_request(X: np.ndarray) -> bytes:
    body = json.dumps({"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32",
                                   "data": X.reshape(-1).tolist()}]}).encode()
    return (b"POST /v2/models/exported/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def binary_request(X: np.ndarray) -> bytes:
    head = json.dumps({"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": X.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + X.tobytes()
    return (b"POST /v2/models/exported/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nInference-Header-Content-Length: %d\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(head), len(body))) + body


_CLEN = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


async def _client(port: int, requests: list[bytes], count: int, deadline: float, lat: list, bodies: list) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors = 0
    try:
        for i in range(count):
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(int(_CLEN.search(head).group(1)))
            lat.append(time.perf_counter() - t0)
            if head[9:12] != b"200":
                errors += 1
            if len(bodies) < 4:
                bodies.append(body)
    finally:
        writer.close()
    return errors


def run_load(port: int, requests: list[bytes], concurrency: int, total: int, seconds: float) -> dict:
    async def go():
        lat: list[float] = []
        bodies: list = []
        warm_end = time.perf_counter() + 5
        await asyncio.gather(*[_client(port, requests, max(5, 100 // concurrency), warm_end, [], [])
                               for _ in range(concurrency)])
        t0 = time.perf_counter()
        per = max(1, total // concurrency)
        errors = await asyncio.gather(*[_client(port, requests, per, t0 + seconds, lat, bodies)
                                        for _ in range(concurrency)])
        return lat, time.perf_counter() - t0, sum(errors)

    lat, elapsed, errors = asyncio.run(go())
    ms = np.asarray(lat) * 1e3
    return {"requests": len(lat), "seconds": round(elapsed, 3), "errors": int(errors),
            "req_s": round(len(lat) / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def check_answers(port: int, X: np.ndarray, want: np.ndarray, what: str) -> None:
    """The server's answer to a JSON request equals Predictor (1e-6), before anything is timed."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/exported/infer", method="POST",
                                 data=json_request(X).split(b"\r\n\r\n", 1)[1],
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        got = np.asarray(json.loads(r.read())["outputs"][0]["data"], np.float32).reshape(-1)
    err = float(np.abs(got - want).max())
    if err > 1e-6:
        raise RuntimeError(f"{what} answers differ from Predictor by {err:.3g}")


def in_process(model_dir: Path, X1: list[np.ndarray], X64: np.ndarray, seconds: float = 3.0) -> dict:
    from pipeline.runtime import Predictor

    p = Predictor.load(model_dir)
    out = {}
    for label, batches in (("1 row", X1), ("64 rows", [X64])):
        for b in batches[:20]:
            p.predict_proba(b)
        n, lat, t0 = 0, [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            b = batches[n % len(batches)]
            s = time.perf_counter()
            p.predict_proba(b)
            lat.append(time.perf_counter() - s)
            n += 1
        elapsed = time.perf_counter() - t0
        rows = batches[0].shape[0]
        ms = np.asarray(lat) * 1e3
        out[label] = {"requests": n, "req_s": round(n / elapsed, 1), "rows_s": round(n * rows / elapsed, 1),
                      "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}
    return out


# ------------------------------------------------------------------ the run
def one_run(model_dir: Path, scale: float, work: Path, quick: bool) -> dict:
    from pipeline.runtime import Predictor

    p = Predictor.load(model_dir)
    rng = np.random.default_rng(0)
    X1 = [rng.normal(size=(1, T, p.n_features)).astype(np.float32) for _ in range(64)]
    X64 = rng.normal(size=(64, T, p.n_features)).astype(np.float32)
    want1 = p.predict_proba(X1[0])
    first = in_process(model_dir, X1, X64, 1.0 if quick else 3.0)
    results = {}
    servers = [("gru-serve (JSON)", lambda: start_gru_serve(model_dir, []), json_request),
               ("gru-serve (binary)", lambda: start_gru_serve(model_dir, []), binary_request),
               ("MLServer 1.7.1 (adaptive batching)", lambda: start_mlserver(model_dir, work), json_request),
               ("naive one-call-per-request", lambda: start_naive(model_dir), json_request)]
    if quick:
        servers = [s for s in servers if "MLServer" not in s[0]]
    for name, start, encode in servers:
        proc, port = start()
        try:
            check_answers(port, X1[0], want1, name)
            rows = {}
            for label, n_rows, conc, total, seconds in CASES:
                reqs = [encode(x) for x in X1] if n_rows == 1 else [encode(X64)]
                r = run_load(port, reqs, conc, max(conc, int(total * scale)), seconds * (0.2 if quick else 1))
                r["rows_s"] = round(r["req_s"] * n_rows, 1)
                rows[label] = r
                print(f"  {name:36s} {label:14s} {r['req_s']:9.1f} req/s {r['rows_s']:10.1f} rows/s "
                      f"p50 {r['p50_ms']:8.3f} ms p99 {r['p99_ms']:8.3f} ms errors {r['errors']}", flush=True)
            results[name] = rows
        finally:
            _stop(proc)
    # the ceiling, measured before and after the servers: the better of the two (the other processes on
    # these shared CPUs only ever slow it down)
    last = in_process(model_dir, X1, X64, 1.0 if quick else 3.0)
    results["in-process Predictor"] = {k: max(first[k], last[k], key=lambda r: r["rows_s"]) for k in first}
    return {"in-process Predictor": results.pop("in-process Predictor"), **results}


def targets(run: dict) -> list[tuple[str, str, str]]:
    ours, ml = run["gru-serve (JSON)"], run.get("MLServer 1.7.1 (adaptive batching)")
    out = []
    if ml:
        ratio = ours["1 row, c=64"]["req_s"] / ml["1 row, c=64"]["req_s"]
        p99 = (ours["1 row, c=64"]["p99_ms"], ml["1 row, c=64"]["p99_ms"])
        out.append(("c=64 single rows: >= 2x MLServer req/s, lower p99",
                    f"{ratio:.2f}x; p99 {p99[0]:.1f} vs {p99[1]:.1f} ms", "PASS" if ratio >= 2 and p99[0] < p99[1] else "MISS"))
    p50 = ours["1 row, c=1"]["p50_ms"]
    out.append(("c=1 single rows: p50 <= 1 ms", f"{p50:.3f} ms", "PASS" if p50 <= 1 else "MISS"))
    share = ours["64 rows, c=8"]["rows_s"] / run["in-process Predictor"]["64 rows"]["rows_s"]
    out.append(("c=8 64-row JSON requests: >= 40% of in-process B=64 rows/s", f"{share:.0%}",
                "PASS" if share >= 0.4 else "MISS"))
    share = run["gru-serve (binary)"]["64 rows, c=8"]["rows_s"] / run["in-process Predictor"]["64 rows"]["rows_s"]
    out.append(("c=8 64-row binary requests: >= 40% of in-process B=64 rows/s", f"{share:.0%}",
                "PASS" if share >= 0.4 else "MISS"))
    return out


def markdown(run: dict, title: str) -> str:
    lines = [f"**{title}**", "", "The ceiling is the better of two measurements, before and after the servers.", "",
             "| server | request | req/s | rows/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for label, r in run["in-process Predictor"].items():
        lines.append(f"| in-process Predictor (ceiling) | {label} (B={1 if label == '1 row' else 64}) | {r['req_s']:,.0f} | "
                     f"{r['rows_s']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    for name, rows in run.items():
        if name == "in-process Predictor":
            continue
        for label, r in rows.items():
            lines.append(f"| {name} | {label} | {r['req_s']:,.0f} | {r['rows_s']:,.0f} | {r['p50_ms']:.3f} | "
                         f"{r['p99_ms']:.3f} |")
    lines += ["", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(run)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "exported"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    ap.add_argument("--quick", action="store_true", help="a short run without MLServer (for tests)")
    ap.add_argument("--update-docs", action="store_true", help="write both runs into docs/serving.md")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    ap.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.naive_server:
        return naive_server(args.model_dir, args.naive_server)
    model_dir = Path(args.model_dir).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.runs):
        print(f"== run {i + 1} of {args.runs}", flush=True)
        runs.append(one_run(model_dir, args.scale, out, args.quick))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    md = "\n\n".join(markdown(r, f"Run {i + 1} of {len(runs)} ({machine})") for i, r in enumerate(runs))
    (out / "serve.json").write_text(json.dumps(runs, indent=1))
    (out / "serve.md").write_text(md + "\n")
    print(md)
    if args.update_docs:
        from regions import update_doc

        return update_doc(ROOT / "docs" / "serving.md", "bench-serve", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
