"""The small HTTP server of a worker or service process: ``/metrics``, ``/healthz`` and ``/readyz``.

A plain ASGI app on uvicorn (already a dependency), in the process's own event loop, on
``STAGEFLOW_METRICS_PORT`` (0, the default, serves nothing). uvicorn's own signal handling is turned off: the
process's runner owns SIGTERM, and stops this server after the worker has finished its in-flight work.

``/healthz`` (liveness) answers from that event loop, so an answer means the loop is responsive: a loop blocked
by a stage's synchronous code does not answer, and Kubernetes' liveness probe times out. ``/readyz`` (readiness)
is a ``Readiness``: the process's consumers have started and it is not shutting down, and its broker and store
(a service's inbox) answer a ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import structlog
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest

from framework.errors import InfrastructureError

log = structlog.get_logger("stageflow.metrics")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
Ready = Callable[[], Awaitable[None]]  # raises InfrastructureError when not ready


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the process's runner handles the signals


def metrics_app(registry: CollectorRegistry, ready: Ready) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            status, body, kind = 200, generate_latest(registry), CONTENT_TYPE
        elif path == "/healthz":
            status, body, kind = 200, b'{"status":"ok"}', b"application/json"
        elif path == "/readyz":
            try:
                await ready()
                status, body = 200, b'{"status":"ready"}'
            except InfrastructureError as exc:
                status, body = 503, b'{"status":"unavailable","error":' + _quoted(str(exc)) + b"}"
            kind = b"application/json"
        else:
            status, body, kind = 404, b'{"status":"not found"}', b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def _quoted(text: str) -> bytes:
    return json.dumps(text).encode()


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, *, ready: Ready, port: int, host: str = "0.0.0.0") -> None:
        config = uvicorn.Config(metrics_app(registry, ready), host=host, port=port, lifespan="off",
                                log_level="warning", access_log=False)
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="stageflow-metrics")
        while not self._server.started:  # bound (or failed to bind: then serve() has returned)
            if self._task.done():
                self._task.result()
                raise OSError(f"the metrics server could not listen on port {self.port}")
            await asyncio.sleep(0.01)
        log.info("metrics served", port=self.port, paths="/metrics /healthz /readyz")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Pingable(Protocol):
    async def ping(self) -> None: ...


class Readiness:
    """``/readyz`` of a worker or service process: ready from ``consuming()`` (its consumers have started) until
    ``stopping()`` (SIGTERM: it drains), while every part (store, broker, inbox) answers its ``ping()``."""

    def __init__(self, *parts: Pingable) -> None:
        self._parts = parts
        self._consuming = False

    def consuming(self) -> None:
        self._consuming = True

    def stopping(self) -> None:
        self._consuming = False

    async def __call__(self) -> None:
        if not self._consuming:
            raise InfrastructureError("not consuming: starting up or shutting down")
        for part in self._parts:
            await part.ping()


def pinger(*parts: Any) -> Ready:
    """A readiness check: every part (a store, a broker, an inbox) answers its ``ping()``."""

    async def ready() -> None:
        for part in parts:
            await part.ping()

    return ready
