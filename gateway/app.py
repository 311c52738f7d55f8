"""The HTTP gateway (FastAPI): start processes, read and list them, operator actions, jobs, stats, health.

Everything is wired here, explicitly: ``create_app(flow=..., settings=...)``. Errors are RFC 9457 problem
details (see ``problems``); request bodies are limited (``limits``); keys are checked (``auth``); each app
has its own metrics registry (``metrics``), stats cache (``cache``) and job runner (``framework.jobs``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from framework.app import Stageflow
from framework.jobs import Jobs
from framework.settings import Settings
from framework.statistics import read_statistics
from framework.telemetry import tracing_from_environment
from framework.wiring import cases_from_settings
from gateway import problems
from gateway.auth import ApiKeys
from gateway.cache import Refreshed
from gateway.guard import Guard
from gateway.limits import BodySizeLimit
from gateway.metrics import GatewayMetrics, RequestMetrics
from gateway.routes import actions, admin, graphs, jobs, processes, schedules, signals, system, workflows
from gateway.views import STATS_SAMPLE

if TYPE_CHECKING:
    from framework.tracing import Tracing

STATS_MAX_AGE_S = 60.0  # an older cached count is not served: the request waits for a new one


def create_app(
    flow: Stageflow | None = None, settings: Settings | None = None, *, tracing: Tracing | None = None
) -> FastAPI:
    """Build the app. Pass an open ``flow`` (tests, embedding), or let the app open one from ``settings``.
    ``tracing`` (``framework.tracing``) spans each request; with no ``flow``, ``OTEL_TRACES_EXPORTER`` turns it
    on (and the flow the app opens publishes the trace context). A ``flow`` passed in has its own observers.

    Raises ``ConfigurationError`` if no API key is configured and ``STAGEFLOW_GATEWAY_INSECURE`` is not set,
    or (with no ``flow``) if the settings name no cases: here, not when the server starts, so the CLI can say so.
    With a ``flow`` passed in and no ASGI lifespan run (httpx's ASGI transport), call
    ``await app.state.shutdown()`` when done: it stops the jobs running in this app.
    """
    settings = settings or (flow.settings if flow is not None else Settings())
    keys = ApiKeys.from_settings(settings)
    cases = cases_from_settings(settings) if flow is None else None
    if tracing is None and flow is None:
        tracing = tracing_from_environment("stageflow-gateway")
    name = f"gateway-{uuid.uuid4().hex[:6]}"

    def attach(app: FastAPI, opened: Stageflow) -> None:
        async def read_stats() -> dict[str, Any]:
            return {
                "counts": await opened.store.count_by_case_and_status(),
                "durations": await opened.store.recent_stage_durations(STATS_SAMPLE),
                "last_hour": await read_statistics(opened.store, opened.engine.clock.now(),
                                                   stuck_after_s=settings.stats_stuck_after_s),
            }

        app.state.flow = opened
        app.state.jobs = Jobs(opened.operations, name=name)
        app.state.stats = Refreshed(read_stats, fresh_s=settings.gateway_stats_fresh_s, max_age_s=STATS_MAX_AGE_S)

        async def shutdown() -> None:
            await app.state.jobs.shutdown()
            await app.state.stats.close()

        app.state.shutdown = shutdown

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if flow is not None:
            try:
                yield
            finally:
                await app.state.shutdown()
            return
        async with Stageflow.from_settings(settings, cases=cases, connection_name="stageflow-gateway",
                                           observers=[tracing] if tracing is not None else []) as opened:
            attach(app, opened)
            try:
                yield
            finally:  # jobs save themselves as interrupted while the store is still open
                await app.state.shutdown()
                if tracing is not None:
                    tracing.shutdown()

    # No /docs or /redoc: they load scripts from a CDN on the origin where the admin page keeps its key.
    # The schema is at /openapi.json, with a read key (see the README for viewing it).
    app = FastAPI(title="Stageflow gateway", version="0.3.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    if flow is not None:
        attach(app, flow)
    app.state.metrics = GatewayMetrics()
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(Guard, keys=keys)  # the key before anything else looks at the request
    # outermost: refused requests count (and are traced) too
    app.add_middleware(RequestMetrics, metrics=app.state.metrics, tracing=tracing)
    for module in (processes, actions, jobs, system, admin, schedules, signals, workflows, graphs):
        app.include_router(module.router(keys))
    return app
