"""Hosting services: build an inbox from a URL and run a module's handlers as services."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from framework.broker.base import Broker
from framework.errors import ConfigurationError
from framework.service.inbox import Inbox, PostgresInbox, SqliteInbox
from framework.service.metrics import ServiceMetrics
from framework.service.sdk import CommandHandler, Service

if TYPE_CHECKING:
    from framework.tracing import Tracing


def inbox_from_url(
    url: str, *, setup_sql: Sequence[str] = (), table: str = "stageflow_inbox", pool_size: int = 10
) -> Inbox:
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return PostgresInbox(url, table=table, setup_sql=setup_sql, max_size=pool_size)
    if scheme == "sqlite":
        path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        return SqliteInbox(path, table=table, setup_sql=setup_sql)
    raise ConfigurationError(f"unsupported service database URL {url!r}", hint="use postgresql://... or sqlite:///...")


def load_handlers(module_name: str) -> tuple[Mapping[str, CommandHandler], Sequence[str]]:
    """A services module exposes ``HANDLERS`` (api -> handler) and optionally ``SETUP_SQL``."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import services from {module_name!r}: {exc}") from exc
    handlers = getattr(module, "HANDLERS", None)
    if not isinstance(handlers, Mapping) or not handlers:
        raise ConfigurationError(
            f"{module_name!r} has no HANDLERS", hint="define HANDLERS = {'api_name': async_handler, ...}"
        )
    return handlers, tuple(getattr(module, "SETUP_SQL", ()))


def build_services(
    handlers: Mapping[str, CommandHandler], *, broker: Broker, inbox: Inbox, metrics: ServiceMetrics | None = None,
    tracing: Tracing | None = None,
) -> list[Service]:
    return [Service(api, handler, broker=broker, inbox=inbox, metrics=metrics, tracing=tracing)
            for api, handler in handlers.items()]
