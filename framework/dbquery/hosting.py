"""Hosting the ``db_query`` service: one ``dbquery.<name>`` service per ``STAGEFLOW_DB_<NAME>`` connection.

Each connection gets its own inbox in its own database (``stageflow_dbquery_inbox``), so a query's effect and
its taskId's record commit in one transaction there. ``stageflow dbquery`` runs them until SIGTERM.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from framework.broker.base import Broker
from framework.dbquery.service import INBOX_TABLE, DbQueryHandler, Limits
from framework.dbquery.sql import dbquery_api
from framework.errors import ConfigurationError
from framework.service.hosting import inbox_from_url
from framework.service.inbox import Inbox
from framework.service.sdk import AfterCommit, Service
from framework.taskid import TaskIdSigner

CONNECTION_PREFIX = "STAGEFLOW_DB_"
_CONNECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DbQuerySettings(BaseSettings):
    """``STAGEFLOW_DBQUERY_*``: the limits of the ``db_query`` service."""

    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_DBQUERY_", extra="ignore")

    max_rows: int = Field(1000, ge=1, le=1_000_000, description="more rows than this is a final error")
    max_result_bytes: int = Field(100_000, ge=1024, description="a larger reply (as JSON) is a final error")
    statement_timeout_s: float = Field(30.0, gt=0, description="PostgreSQL's statement_timeout for each query")
    concurrency: int = Field(16, ge=1, le=1000, description="queries in flight per connection (its pool size)")


def db_connections(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Connection name -> URL, from ``STAGEFLOW_DB_<NAME>=postgresql://...`` or ``sqlite:///...`` variables."""
    found = {}
    for key, url in (os.environ if environ is None else environ).items():
        if key.startswith(CONNECTION_PREFIX) and url.strip():
            name = key.removeprefix(CONNECTION_PREFIX).lower()
            if not _CONNECTION_NAME.match(name):
                raise ConfigurationError(f"{key}: {name!r} is no connection name",
                                         hint="use letters, digits and underscores, starting with a letter")
            found[name] = url.strip()
    return found


def known_connections(environ: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The names a blueprint's ``connection`` is checked against on load, or None (no check) in a process
    that has no connection settings, such as a worker, which never holds database URLs it does not use."""
    names = frozenset(db_connections(environ))
    return names or None


@dataclass
class HostedConnection:
    name: str
    inbox: Inbox
    service: Service


def dbquery_services(
    connections: Mapping[str, str], *, broker: Broker, signer: TaskIdSigner, settings: DbQuerySettings,
    max_message_bytes: int, after_commit: AfterCommit | None = None,
) -> list[HostedConnection]:
    """A service (not started) and its inbox (not opened) per connection."""
    if not connections:
        raise ConfigurationError("no database connections for the db_query service",
                                 hint="set STAGEFLOW_DB_<NAME>=postgresql://... (or sqlite:///path) per connection")
    limits = Limits(settings.max_rows, settings.max_result_bytes, settings.statement_timeout_s)
    hosted = []
    for name, url in sorted(connections.items()):
        inbox = inbox_from_url(url, table=INBOX_TABLE, pool_size=settings.concurrency)
        service = Service(dbquery_api(name), DbQueryHandler(name, limits).handle, broker=broker, inbox=inbox,
                          prefetch=settings.concurrency, max_message_bytes=max_message_bytes, signer=signer,
                          after_commit=after_commit)
        hosted.append(HostedConnection(name, inbox, service))
    return hosted
