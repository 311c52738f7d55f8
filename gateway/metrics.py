"""Prometheus metrics of one gateway app: its own registry (no globals), request counts and latency by
route template, and processes by case and status (from the same cached count as ``/stats``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from framework.tracing import Tracing

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Any other method name is one label, "other": a client inventing methods must not add series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _ProcessCounts(Collector):
    """Reports the counts it was last given; the ``/metrics`` handler gives it the cached ones first."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, str, int]] = []
        self.age_s = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("stageflow_processes", "Processes in the store by case and status",
                                  labels=["case", "status"])
        for case, status, n in self.counts:
            gauge.add_metric([case, status], n)
        yield gauge
        yield GaugeMetricFamily("stageflow_processes_count_age_seconds",
                                "Age of the cached process counts", value=self.age_s)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("stageflow_gateway_requests", "HTTP requests answered by the gateway",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("stageflow_gateway_request_duration_seconds", "Time to answer a request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._processes = _ProcessCounts()
        self.registry.register(self._processes)

    def render(self, counts: list[tuple[str, str, int]], age_s: float) -> bytes:
        self._processes.counts, self._processes.age_s = counts, age_s
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts every request and times it, labelled by the route's template (``/processes/
    {process_id}``, so ids do not make a label each) or ``unmatched``. With ``tracing`` (``framework.tracing``)
    each request is also a server span, current while it runs (continuing a client's ``traceparent``), so a
    process started by it carries the trace into its first message."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, tracing: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self.tracing is None:
            await self._answer(scope, receive, send)
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            with self.tracing.request_span(f"HTTP {scope['method']}", headers) as span:
                route = await self._answer(scope, receive, send)
                span.update_name(f"{scope['method']} {route}")  # the template, never a path with ids in it
                span.set_attribute("http.route", route)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> str:
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        route = "unmatched"
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
        return route
