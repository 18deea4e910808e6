"""``gru-serve [MODEL_DIR ...]``: serve exported models over the Open Inference Protocol (V2), REST and gRPC.

Owns: the serve command line and its defaults (one declaration each, below). Imports: argparse,
pipeline.cli_common, pipeline.errors; pipeline.serve.server (uvicorn, grpcio, tritonclient's
protocol messages, prometheus_client: the ``serve`` extra) or pipeline.serve.ray_engine (Ray Serve)
once the arguments are checked. Reads the model folders; writes the ready line and errors on stderr.

    gru-serve                                   # exported/ as model "exported", REST :8000, gRPC :8001
    gru-serve models/a models/b --port 9000     # two models, named a and b
    gru-serve exported --name ecg --max-batch 128 --max-delay-us 500
    gru-serve --engine ray --replicas 2         # the same app as a Ray Serve deployment (REST)

Every request and refusal is described in docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipeline.cli_common import run_cli
from pipeline.errors import ConfigError

__all__ = ["main", "parser"]

HOST = "127.0.0.1"
PORT = 8000
GRPC_PORT = 8001
MAX_BATCH = 64                      # rows per native call
MAX_DELAY_US = 0                    # 0: batch what queued while the worker was busy, never wait for more
MAX_QUEUE = 1024                    # requests waiting per model before 503
MAX_SEQUENCES = 10_000              # live sequence ids per model
SEQUENCE_IDLE_S = 300.0             # an id unused this long is evicted
MAX_REQUEST_BYTES = 32 * 1024 * 1024
DRAIN_S = 10.0                      # SIGTERM: the bound on finishing in-flight requests


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gru-serve", description="Serve exported GRU classifiers over the Open Inference Protocol (V2): "
        "REST and gRPC, dynamic batching, stateful sequences, Prometheus metrics.")
    ap.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR", help="exported folders (default: exported)")
    ap.add_argument("--name", help="the V2 model name of a single MODEL_DIR (default: the folder's name)")
    ap.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    ap.add_argument("--port", type=int, default=PORT, help=f"REST port (default {PORT}; 0: any free port)")
    ap.add_argument("--grpc-port", type=int, default=GRPC_PORT,
                    help=f"gRPC port (default {GRPC_PORT}; 0: any free port; -1: no gRPC)")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH, help=f"rows per native call (default {MAX_BATCH})")
    ap.add_argument("--max-delay-us", type=int, default=MAX_DELAY_US,
                    help=f"longest wait for a batch to fill, microseconds (default {MAX_DELAY_US})")
    ap.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                    help=f"requests waiting per model before 503 (default {MAX_QUEUE})")
    ap.add_argument("--max-sequences", type=int, default=MAX_SEQUENCES,
                    help=f"live sequence ids per model (default {MAX_SEQUENCES})")
    ap.add_argument("--sequence-idle-s", type=float, default=SEQUENCE_IDLE_S,
                    help=f"evict a sequence id unused this long, seconds (default {SEQUENCE_IDLE_S:g})")
    ap.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES,
                    help=f"largest request body (default {MAX_REQUEST_BYTES})")
    ap.add_argument("--drain-s", type=float, default=DRAIN_S,
                    help=f"on SIGTERM, the bound on finishing in-flight requests, seconds (default {DRAIN_S:g})")
    ap.add_argument("--access-log", action="store_true", help="one JSON line per request on stderr")
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local (this process) or ray (a Ray Serve deployment; REST only)")
    ap.add_argument("--replicas", type=int, default=1, help="--engine ray: replicas (default 1)")
    return ap


def _check(args: argparse.Namespace) -> None:
    positive = {"--max-batch": args.max_batch, "--max-queue": args.max_queue, "--max-sequences": args.max_sequences,
                "--max-request-bytes": args.max_request_bytes, "--replicas": args.replicas}
    for flag, value in positive.items():
        if value < 1:
            raise ConfigError(f"{flag}: expected a positive integer, got {value}")
    for flag, value in {"--max-delay-us": args.max_delay_us, "--sequence-idle-s": args.sequence_idle_s,
                        "--drain-s": args.drain_s}.items():
        if not value >= 0:
            raise ConfigError(f"{flag}: expected a non-negative number, got {value}")
    for flag, value in {"--port": args.port, "--grpc-port": args.grpc_port}.items():
        if not (-1 if flag == "--grpc-port" else 0) <= value <= 65535:
            raise ConfigError(f"{flag}: expected a port from 0 to 65535, got {value}")
    if args.replicas != 1 and args.engine != "ray":
        raise ConfigError(f"--replicas: applies to --engine ray, got --engine {args.engine}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        _check(args)
        from pipeline.serve.model import ServeLimits

        limits = ServeLimits(args.max_batch, args.max_delay_us, args.max_queue, args.max_sequences,
                             args.sequence_idle_s)
        folders = args.model_dirs or ["exported"]
        if args.engine == "ray":
            from pipeline.serve.ray_engine import serve_on_ray

            return serve_on_ray(folders, args.name, limits, args.host, args.port, args.replicas,
                                args.max_request_bytes)
        from pipeline.serve.metrics import ServeMetrics
        from pipeline.serve.server import ServeConfig, load_models, serve, version_of_package

        metrics = ServeMetrics()
        models = load_models(folders, args.name, limits, metrics)
        if args.access_log:
            import logging

            logging.basicConfig(stream=sys.stderr, format="%(message)s")
            logging.getLogger("gru_serve.access").setLevel(logging.INFO)
        config = ServeConfig(args.host, args.port, None if args.grpc_port < 0 else args.grpc_port,
                             args.max_request_bytes, args.drain_s, args.access_log)
        return serve(models, metrics, config, version_of_package())

    return run_cli(go, "gru-serve")


if __name__ == "__main__":
    sys.exit(main())
