"""Run gru-serve on this machine: REST (uvicorn) and gRPC (grpc.aio) on one event loop, one worker thread
per model, and a graceful stop on SIGTERM.

Owns: ``load_models``, ``ServeConfig``, ``serve`` (bind, announce, wait for a signal, drain, stop).
Imports: asyncio, signal, socket, uvicorn (and uvloop when installed), pipeline.serve.{model, metrics,
http_app, grpc_service}. Reads the model folders; writes one "ready" line and the shutdown summary
on stderr (and the access log when asked).

Stopping: SIGTERM or SIGINT makes /v2/health/ready answer 503, closes the listening sockets, lets
in-flight requests finish for up to ``drain_s`` seconds (the batchers' queues included), then
returns 0, or 1 when requests were still running at the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Optional

from pipeline.errors import ConfigError
from pipeline.serve.http_app import EXTENSIONS, SERVER_NAME, V2App
from pipeline.serve.metrics import ServeMetrics
from pipeline.serve.model import ServedModel, ServeLimits

__all__ = ["ServeConfig", "load_models", "serve", "build_app"]


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    grpc_port: Optional[int]      # None: no gRPC
    max_request_bytes: int
    drain_s: float
    access_log: bool


def load_models(folders: list[str], name: Optional[str], limits: ServeLimits,
                metrics: Optional[ServeMetrics]) -> dict[str, ServedModel]:
    """Load each folder as a model named after it (or ``name`` for a single folder); names must differ."""
    if name is not None and len(folders) != 1:
        raise ConfigError(f"--name: expected one MODEL_DIR, got {len(folders)}")
    models: dict[str, ServedModel] = {}
    for folder in folders:
        model = ServedModel.load(folder, name, limits, metrics)
        if model.name in models:
            raise ConfigError(f"two models named {model.name!r} ({folder!r} and another folder); "
                              "serve folders with different names")
        models[model.name] = model
        if metrics is not None:
            metrics.track(model.name, lambda m=model: m.batcher.depth + m.seq_batcher.depth,
                          lambda m=model: len(m.sequences))
    return models


def build_app(models: dict[str, ServedModel], metrics, config: ServeConfig, version: str) -> V2App:
    return V2App(models, metrics, config.max_request_bytes, config.access_log, version)


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"{what}: cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(models: dict[str, ServedModel], metrics, config: ServeConfig, version: str) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (0: drained cleanly)."""
    try:
        import uvloop  # noqa: F401  (faster sockets; optional)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(models, metrics, config, version))


async def _serve(models: dict[str, ServedModel], metrics, config: ServeConfig, version: str) -> int:
    import uvicorn

    app = build_app(models, metrics, config, version)
    sock = _bind(config.host, config.port, "--port")
    uv = _Uvicorn(uvicorn.Config(app, http="httptools", lifespan="off", access_log=False, log_level="warning",
                                 timeout_graceful_shutdown=config.drain_s, server_header=False, date_header=False,
                                 timeout_keep_alive=30))
    grpc_server = None
    grpc_port = None
    if config.grpc_port is not None:
        from pipeline.serve.grpc_service import V2Servicer, start_grpc

        probe = _bind(config.host, config.grpc_port, "--grpc-port")  # a clear error, and the port when 0
        grpc_port = probe.getsockname()[1]
        probe.close()
        servicer = V2Servicer(models, app, SERVER_NAME, version, EXTENSIONS)
        grpc_server = await start_grpc(servicer, config.host, grpc_port, config.max_request_bytes)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.ensure_future(uv.serve(sockets=[sock]))
    while not uv.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        http_task.result()
    port = sock.getsockname()[1]
    names = ", ".join(f"{m.name} ({m.predictor.task}, {m.predictor.n_classes} classes)" for m in models.values())
    print(f"gru-serve: ready: http://{config.host}:{port}"
          + (f" grpc {config.host}:{grpc_port}" if grpc_port else "") + f" models: {names}", file=sys.stderr, flush=True)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait((waiter, http_task), return_when=asyncio.FIRST_COMPLETED)
    # drain: refuse new work, stop listening, let what is in flight finish within the bound
    app.ready = False
    uv.should_exit = True
    stops = [http_task]
    if grpc_server is not None:
        stops.append(asyncio.ensure_future(grpc_server.stop(config.drain_s)))
    done, pending = await asyncio.wait(stops, timeout=config.drain_s + 1.0)
    drained = await loop.run_in_executor(None, lambda: all(m.close(config.drain_s) for m in models.values()))
    for task in pending:
        task.cancel()
    waiter.cancel()
    clean = drained and not pending
    print(f"gru-serve: stopped ({'drained' if clean else 'drain bound reached'})", file=sys.stderr, flush=True)
    return 0 if clean else 1


class _Uvicorn:
    """uvicorn.Server without its own signal handling (this module's loop owns SIGTERM/SIGINT)."""

    def __new__(cls, config):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        return Server(config)


def version_of_package() -> str:
    try:
        from importlib.metadata import version

        return version("gru-onnx-pipeline")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return "0"

