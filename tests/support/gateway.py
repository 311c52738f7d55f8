"""The gateway under test: ``create_app`` on an open ``Stageflow``, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from business_cases import EcommerceOrder
from framework import Settings, Stageflow
from tests.support.cases import CASES
from tests.support.failure_cases import CASES as FAILURE_CASES
from tests.support.fanout_cases import CASES as FANOUT_CASES
from tests.support.signal_cases import CASES as SIGNAL_CASES

READ_KEY = "read-key-0123456789abcdef-0123456789abcdef"  # 32 bytes at least
OPERATE_KEY = "operate-key-0123456789abcdef-0123456789abcdef"
ALL_CASES = [*CASES, *FAILURE_CASES, *FANOUT_CASES, *SIGNAL_CASES, EcommerceOrder]


@dataclass
class Gateway:
    flow: Stageflow
    client: httpx.AsyncClient  # sends the operate key unless a request says otherwise
    app: FastAPI

    async def process_count(self) -> int:
        return sum((await self.flow.store.count_by_status()).values())


def with_keys(settings: Settings, **overrides: object) -> Settings:
    values = {"api_keys_read": [READ_KEY], "api_keys_operate": [OPERATE_KEY], **overrides}
    return settings.model_copy(update=values)


@asynccontextmanager
async def open_gateway(settings: Settings, *, tracing: Any = None, **overrides: object) -> AsyncIterator[Gateway]:
    """``tracing`` (a ``framework.tracing.Tracing``) spans the requests and traces what the flow publishes."""
    from gateway.app import create_app

    settings = with_keys(settings, **overrides)
    observers = [tracing] if tracing is not None else []
    async with Stageflow.from_settings(settings, cases=ALL_CASES, observers=observers) as flow:
        app = create_app(flow, settings, tracing=tracing)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers={"X-API-Key": OPERATE_KEY},
                timeout=60,
            ) as client:
                yield Gateway(flow, client, app)
        finally:
            await app.state.shutdown()  # httpx runs no lifespan: stop the app's jobs ourselves
