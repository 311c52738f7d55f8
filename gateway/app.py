"""The HTTP gateway (FastAPI): start processes, read and list them, operator actions, stats, health.

Everything is wired here, explicitly: ``create_app(flow=..., settings=...)``. Errors are RFC 9457 problem
details (see ``problems``); request bodies are limited (``limits``); keys are checked (``auth``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from framework.app import Stageflow
from framework.settings import Settings
from gateway import problems
from gateway.auth import ApiKeys
from gateway.limits import BodySizeLimit
from gateway.routes import actions, admin, processes, schedules, system


def create_app(flow: Stageflow | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app. Pass an open ``flow`` (tests, embedding), or let the app open one from ``settings``.

    Raises ``ConfigurationError`` if no API key is configured and ``STAGEFLOW_GATEWAY_INSECURE`` is not set.
    """
    settings = settings or (flow.settings if flow is not None else Settings())
    keys = ApiKeys.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if flow is not None:
            yield
            return
        async with Stageflow.from_settings(settings, connection_name="stageflow-gateway") as opened:
            app.state.flow = opened
            yield

    app = FastAPI(title="Stageflow gateway", version="0.2.0", lifespan=lifespan)
    if flow is not None:
        app.state.flow = flow
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes)
    for module in (processes, actions, system, admin, schedules):
        app.include_router(module.router(keys))
    return app
