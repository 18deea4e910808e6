"""Fixtures for the gru-serve tests: a real ``gru-serve`` process on 127.0.0.1, ephemeral ports.

``start_server(folders, *flags)`` starts ``python -m pipeline.serve.cli`` with ``--port 0 --grpc-port 0``,
waits for its ready line (60 s at most) and returns a ``Server`` (ports, process, stderr so far);
``Server.stop()`` sends SIGTERM and returns the exit code and the rest of stderr. Every server a
test starts is stopped at the end of it. The model folders: ``exported/`` (binary, the fused
kernel, streams) and tiny graphs written with onnx.helper (tests/tiny_models.py): a 3-class model
with a stream graph, a variable-length one with a ``lengths`` input, and a token-id (Embedding) one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tiny_models import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported"
READY = re.compile(r"ready: http://127\.0\.0\.1:(\d+)(?: grpc 127\.0\.0\.1:(\d+))?")

pytest.importorskip("uvicorn", reason="gru-serve needs the serve extra (pip install -e '.[serve]')")


@dataclass
class Server:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    lines: list = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return code, "".join(self.lines)


def _start(folders, *flags, env=None) -> Server:
    cmd = [sys.executable, "-m", "pipeline.serve.cli", *map(str, folders), "--port", "0", "--grpc-port", "0", *flags]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    ready = threading.Event()
    found: dict = {}

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            m = READY.search(line)
            if m and not ready.is_set():
                found["ports"] = (int(m.group(1)), int(m.group(2) or 0))
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(60) or "ports" not in found:
        proc.kill()
        raise AssertionError(f"gru-serve did not start: {''.join(lines)[-2000:]}")
    return Server(proc, *found["ports"], lines, reader)


@pytest.fixture
def start_server():
    servers: list[Server] = []

    def start(folders=(EXPORTED,), *flags, env=None) -> Server:
        server = _start(folders, *flags, env=env)
        servers.append(server)
        return server

    yield start
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture(scope="session")
def multiclass_dir(tmp_path_factory) -> Path:
    """A tiny 3-class model (F=3) with a stream graph, in a folder named ``triple``."""
    return write_tiny_model(tmp_path_factory.mktemp("serve") / "triple", task="multiclass", stream=True)


@pytest.fixture(scope="session")
def variable_dir(tmp_path_factory) -> Path:
    """A tiny binary variable-length model (the ``lengths`` input), in a folder named ``varlen``."""
    return write_tiny_model(tmp_path_factory.mktemp("serve") / "varlen", masking=True)


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory) -> Path:
    """A tiny 3-class token-id model (ids in [0, 40), INT64 (batch, time)), in a folder named ``tokens``."""
    return write_tiny_model(tmp_path_factory.mktemp("serve") / "tokens", task="multiclass", vocabulary_size=40)
