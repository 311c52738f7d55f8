"""Hosting the HTTP adapter: inside a worker, so API calls need no extra process, or in a process of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from framework.broker.base import Broker
from framework.http.adapter import HttpAdapter
from framework.service.inbox import StatelessInbox
from framework.service.sdk import Service
from framework.settings import Settings
from framework.taskid import TaskIdSigner

if TYPE_CHECKING:
    from framework.tracing import Tracing


@asynccontextmanager
async def http_service(
    settings: Settings, broker: Broker, *, signer: TaskIdSigner, tracing: Tracing | None = None
) -> AsyncIterator[Service]:
    """The ``http`` service on ``broker`` (not started), configured from ``settings``. It sends a request only
    for a command whose taskId ``signer`` verifies (others are parked).

    Its HTTP client is closed when the block ends: start and stop the service inside it."""
    adapter = HttpAdapter(
        signer=signer, allow_networks=settings.http_allow_networks, hosts_by_secret=settings.http_hosts_by_secret,
        default_timeout_s=settings.http_timeout_s, max_body_bytes=settings.http_max_body_bytes,
        max_connections=settings.http_concurrency,
    )
    async with adapter:
        yield Service(HttpAdapter.api, adapter.handle, broker=broker, inbox=StatelessInbox(),
                      prefetch=settings.http_concurrency, max_message_bytes=settings.max_message_bytes, signer=signer,
                      tracing=tracing)


@asynccontextmanager
async def hosted_http_adapter(
    settings: Settings, broker: Broker, *, signer: TaskIdSigner, tracing: Tracing | None = None
) -> AsyncIterator[Service | None]:
    """A worker's ``http`` service (see ``http_service``), or None if ``STAGEFLOW_HTTP_ADAPTER`` is off."""
    if not settings.http_adapter:
        yield None
        return
    async with http_service(settings, broker, signer=signer, tracing=tracing) as service:
        yield service
