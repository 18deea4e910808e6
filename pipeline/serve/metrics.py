"""Prometheus metrics of gru-serve, in a registry of their own (``GET /metrics``).

Owns: ``ServeMetrics``. Imports: prometheus_client (the ``serve`` extra). Writes nothing but the
exposition text it is asked for.

    gru_serve_requests_total{model,protocol}            requests answered (any status)
    gru_serve_errors_total{model,protocol,reason}        refused or failed requests, by reason
    gru_serve_request_seconds{model,protocol}            latency from parsed request to answer (histogram)
    gru_serve_batch_rows{model}                          rows per native call (histogram)
    gru_serve_queue_depth{model}                         requests waiting for the worker
    gru_serve_live_sequences{model}                      sequence ids holding state
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("gru_serve_requests", "Infer and metadata requests answered", ["model", "protocol"],
                                registry=r)
        self.errors = Counter("gru_serve_errors", "Refused or failed requests by reason",
                              ["model", "protocol", "reason"], registry=r)
        self.latency = Histogram("gru_serve_request_seconds", "Infer latency, request parsed to answer ready",
                                 ["model", "protocol"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("gru_serve_batch_rows", "Rows per native call", ["model"],
                                    buckets=_ROW_BUCKETS, registry=r)
        self.queue_depth = Gauge("gru_serve_queue_depth", "Requests waiting for the worker", ["model"], registry=r)
        self.live_sequences = Gauge("gru_serve_live_sequences", "Sequence ids holding state", ["model"], registry=r)
        self._children: dict = {}

    def batch_observer(self, model: str) -> Callable[[int], None]:
        return self.batch_rows.labels(model).observe

    def track(self, model: str, depth: Callable[[], int], live: Callable[[], int]) -> None:
        """Read a model's queue depth and live sequences when scraped."""
        self.queue_depth.labels(model).set_function(depth)
        self.live_sequences.labels(model).set_function(live)

    def answered(self, model: str, protocol: str, seconds: float, reason: str | None = None) -> None:
        key = (model, protocol)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(model, protocol), self.latency.labels(model, protocol))
        pair[0].inc()
        pair[1].observe(seconds)
        if reason is not None:
            self.errors.labels(model, protocol, reason).inc()

    def refused(self, model: str, protocol: str, reason: str) -> None:
        """A request refused before it reached a model (unknown model, bad body, too large)."""
        self.requests.labels(model, protocol).inc()
        self.errors.labels(model, protocol, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
