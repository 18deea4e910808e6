"""The V2 REST endpoints as a plain ASGI application (run by uvicorn, or by Ray Serve's proxy).

Owns: ``V2App``: routing, the request size limit, client disconnects, the error bodies, the
access log and ``/metrics``. Imports: asyncio, json, logging, time, pipeline.serve.{model, protocol,
metrics}. Reads request bodies; writes responses and, when enabled, one JSON access-log line per
request (logger ``gru_serve.access``).

    GET  /v2/health/live                          200 {"live": true}
    GET  /v2/health/ready                         200 {"ready": true}, 503 while loading or draining
    GET  /v2                                      server metadata
    GET  /v2/models/{m}[/versions/{v}]            model metadata (inputs, outputs: datatype and shape, -1 dynamic)
    GET  /v2/models/{m}[/versions/{v}]/ready      200 when the model is loaded
    POST /v2/models/{m}[/versions/{v}]/infer      inference (JSON and binary tensor data)
    GET  /metrics                                 Prometheus exposition

Errors are ``{"error": "<one sentence>"}`` with 400 (a bad request), 404 (no such model, version or
route), 413 (a body over the size limit; the connection is then closed), 503 (queue full, sequence
capacity, shutting down) or 500 (the model failed).

A client that disconnects while its request waits: the request is cancelled, so it leaves the
queue without running (a sequence step that has not run yet does not advance the state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Optional

from pipeline.serve.model import ServedModel, input_error_status
from pipeline.serve.protocol import ProtocolError, encode_rest_infer, parse_rest_infer

__all__ = ["V2App", "SERVER_NAME"]

SERVER_NAME = "gru-serve"
EXTENSIONS = ["binary_tensor_data", "sequence", "classification"]
_JSON = [(b"content-type", b"application/json")]
access_log = logging.getLogger("gru_serve.access")


class V2App:
    """ASGI app over named ``ServedModel``s.

    Args:
        models: V2 name -> model.
        metrics: a ``ServeMetrics`` (or None: /metrics answers 404).
        max_request_bytes: the largest body accepted.
        access_log: write one JSON line per request to the ``gru_serve.access`` logger.
        version: the server version reported by GET /v2.
    """

    def __init__(self, models: dict[str, ServedModel], metrics, max_request_bytes: int, access_log: bool = False,
                 version: str = "0") -> None:
        self.models = models
        self.metrics = metrics
        self.max_request_bytes = int(max_request_bytes)
        self.access_log = access_log
        self.ready = True
        self.version = version

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        status, model_name, nbytes = await self._handle(scope, receive, send)
        if self.access_log:
            client = scope.get("client") or ("", 0)
            access_log.info(json.dumps({
                "time": round(time.time(), 6), "client": client[0], "method": scope["method"], "path": scope["path"],
                "status": status, "model": model_name, "bytes_out": nbytes,
                "ms": round((time.perf_counter() - t0) * 1e3, 3)}, separators=(",", ":")))

    async def _handle(self, scope: dict, receive, send) -> tuple[int, Optional[str], int]:
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        model_name = None
        try:
            if parts[0] == "metrics" and len(parts) == 1 and method == "GET" and self.metrics is not None:
                body = self.metrics.exposition()
                await _send(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
                return 200, None, len(body)
            if parts[0] != "v2":
                raise ProtocolError(404, f"no route {method} {scope['path']}; the API is under /v2", "not_found")
            rest = parts[1:]
            if rest in ([], [""]) and method == "GET":
                return await _json(send, 200, {"name": SERVER_NAME, "version": self.version, "extensions": EXTENSIONS})
            if rest == ["health", "live"] and method == "GET":
                return await _json(send, 200, {"live": True})
            if rest == ["health", "ready"] and method == "GET":
                return await _json(send, 200 if self.ready else 503, {"ready": self.ready})
            if len(rest) >= 2 and rest[0] == "models":
                model_name = rest[1]
                model, action = self._model(rest[1:])
                if action is None and method == "GET":
                    return await _json(send, 200, model.metadata())
                if action == "ready" and method == "GET":
                    return await _json(send, 200 if self.ready else 503, {"name": model.name, "ready": self.ready})
                if action == "infer" and method == "POST":
                    return await self._infer(model, scope, receive, send)
            raise ProtocolError(404, f"no route {method} {scope['path']}", "not_found")
        except ProtocolError as e:
            if self.metrics is not None:
                self.metrics.refused(model_name if model_name in self.models else "", "http", e.reason)
            extra = [(b"connection", b"close")] if e.status == 413 else []
            return await _json(send, e.status, {"error": str(e)}, extra, model_name)

    def _model(self, rest: list[str]) -> tuple[ServedModel, Optional[str]]:
        """[name], [name, action], [name, versions, v] or [name, versions, v, action] -> (model, action)."""
        model = self.models.get(rest[0])
        if model is None:
            raise ProtocolError(404, f"unknown model {rest[0]!r}; this server has {sorted(self.models)}", "not_found")
        version = None
        if len(rest) >= 3 and rest[1] == "versions":
            version, rest = rest[2], [rest[0]] + rest[3:]
        model.check_version(version)
        if len(rest) > 2:
            raise ProtocolError(404, f"no route under model {model.name!r}: {'/'.join(rest[1:])}", "not_found")
        return model, (rest[1] if len(rest) == 2 else None)

    async def _infer(self, model: ServedModel, scope: dict, receive, send) -> tuple[int, Optional[str], int]:
        headers = dict(scope["headers"])
        body = await self._body(headers, receive)
        t0 = time.perf_counter()
        reason = None
        try:
            if not self.ready:
                raise ProtocolError(503, "the server is shutting down", "shutting_down")
            req = parse_rest_infer(body, _text(headers.get(b"inference-header-content-length")))
            outputs = await _unless_disconnected(model.infer(req), receive)
            if outputs is None:  # the client went away: nobody to answer
                reason = "client_disconnected"
                return 499, model.name, 0
            payload, json_len = encode_rest_infer(model.name, "1", req, outputs)
            extra = [] if json_len is None else [(b"inference-header-content-length", str(json_len).encode())]
            ctype = b"application/json" if json_len is None else b"application/octet-stream"
            await _send(send, 200, payload, [(b"content-type", ctype)] + extra)
            return 200, model.name, len(payload)
        except Exception as e:  # noqa: BLE001 - every failure is answered with one sentence
            status, reason, message = input_error_status(e)
            return await _json(send, status, {"error": message}, [], model.name)
        finally:
            if self.metrics is not None:
                self.metrics.answered(model.name, "http", time.perf_counter() - t0, reason)

    async def _body(self, headers: dict, receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_request_bytes:
            raise ProtocolError(413, f"request body: expected at most {self.max_request_bytes} bytes "
                                     f"(--max-request-bytes), got {int(declared)}", "too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ProtocolError(400, "the client disconnected before sending the whole body", "client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise ProtocolError(413, f"request body: expected at most {self.max_request_bytes} bytes "
                                         "(--max-request-bytes), got more", "too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _unless_disconnected(work, receive) -> Optional[dict]:
    """Await ``work`` unless the client disconnects first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        if not watch.done():
            watch.cancel()
    if task in done:
        return task.result()
    message = watch.result()
    if message.get("type") != "http.disconnect":  # (not expected: the body was read whole)
        return await task
    task.cancel()
    return None


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("latin-1")


async def _send(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, obj: Any, extra: Optional[list] = None,
                model: Optional[str] = None) -> tuple[int, Optional[str], int]:
    body = json.dumps(obj, separators=(",", ":")).encode()
    await _send(send, status, body, _JSON + (extra or []))
    return status, model, len(body)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
