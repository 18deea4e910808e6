"""``gru-serve --engine ray``: the same V2 REST app as a Ray Serve deployment with N replicas.

Owns: ``GruServeReplica`` (one replica: the models, their batchers and metrics, and the ``V2App``)
and ``serve_on_ray``. Imports: ray, ray.serve (the ``serve-ray`` extra), pipeline.serve.{model,
metrics, http_app}. Reads the model folders in every replica; writes the ready line on stderr.

Ray Serve does what it does best: its HTTP proxy takes the requests on host:port and routes each to
a replica (replicas, routing, autoscaling are Ray's); each replica batches what reaches it exactly
as the local server does. Not served on Ray: gRPC (Ray Serve's gRPC proxy needs its own service
definitions; use the local engine for V2 gRPC), and, with more than one replica, sequences: a
sequence's state lives in one replica and Ray's router has no affinity by id, so sequence requests
are refused with a 400 that says so.

Ray starts a local cluster unless ``RAY_ADDRESS`` names one. SIGTERM or SIGINT shuts the deployment
and Ray down and returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from pipeline.errors import ConfigError, PipelineError
from pipeline.serve.model import ServeLimits

__all__ = ["serve_on_ray", "GruServeReplica"]

APP_NAME = "gru-serve"


class GruServeReplica:
    """One Ray Serve replica (wrapped by ``serve.ingress`` at deploy time)."""

    def __init__(self, folders: list[str], name: Optional[str], limits: ServeLimits, max_request_bytes: int,
                 sequence_refusal: Optional[str]) -> None:
        from pipeline.serve.http_app import V2App
        from pipeline.serve.metrics import ServeMetrics
        from pipeline.serve.server import load_models, version_of_package

        metrics = ServeMetrics()
        models = load_models(folders, name, limits, metrics)
        for model in models.values():
            model.sequence_refusal = sequence_refusal
        self._app = V2App(models, metrics, max_request_bytes, False, version_of_package())

    def __serve_build_asgi_app__(self):
        return self._app


def serve_on_ray(folders: list[str], name: Optional[str], limits: ServeLimits, host: str, port: int,
                 replicas: int, max_request_bytes: int) -> int:
    """Deploy on Ray Serve and block until SIGTERM/SIGINT; the exit code."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ConfigError("--engine ray needs Ray Serve: pip install 'gru-onnx-pipeline[serve-ray]'") from None
    folders = [str(Path(f).resolve()) for f in folders]
    for folder in folders:
        if not (Path(folder) / "manifest.json").is_file():
            raise ConfigError(f"MODEL_DIR: expected an exported folder with manifest.json, got {folder!r}")
    refusal = None if replicas == 1 else (
        f"sequences are not served with --engine ray and {replicas} replicas: a sequence's state lives in one "
        "replica and Ray Serve routes requests without affinity; use --replicas 1 or the local engine")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's INFO lines; the ready line says it all
    try:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray's own error, as one line
        raise PipelineError(f"--engine ray: Ray could not start: {_first_line(exc)}") from None
    try:
        try:
            running = _deploy(serve, folders, name, limits, host, port, replicas, max_request_bytes, refusal)
        except Exception as exc:  # noqa: BLE001 - Ray Serve's own error (a port in use, a replica that failed)
            raise PipelineError(f"--engine ray: the deployment failed: {_first_line(exc)}") from None
        print(f"gru-serve: ready: http://{host}:{port} (Ray Serve, {running} of {replicas} replicas running) models: "
              + ", ".join(Path(f).name for f in folders), file=sys.stderr, flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.2):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    print("gru-serve: stopped (Ray Serve shut down)", file=sys.stderr, flush=True)
    return 0


def _deploy(serve, folders, name, limits, host, port, replicas, max_request_bytes, refusal) -> int:
    """Start Serve's proxy on host:port, run the app, and return how many replicas are running."""
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
    deployment = serve.deployment(num_replicas=replicas, name="GruServe",
                                  ray_actor_options={"num_cpus": 0})(serve.ingress()(GruServeReplica))
    serve.run(deployment.bind(folders, name, limits, max_request_bytes, refusal), name=APP_NAME,
              route_prefix="/", blocking=False)
    return serve.status().applications[APP_NAME].deployments["GruServe"].replica_states.get("RUNNING", 0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()
