"""PostgreSQL connections as the store uses them: how a pool connects (each host of a multi-host URL with a
time limit of its own), the pool's release hook, "unreachable" as ``StoreError``, and the one-by-one fallback
of a batch PostgreSQL refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from framework.errors import StoreError, UnstorableDataError
from framework.store.sql.executor import PgConnection, PgExecutor

# Errors that mean "the database is not reachable right now"; anything else is a bug to surface.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # a failover under way: no listed host takes writes yet
)

# asyncpg's connect timeout (60 s by default) is one budget for all the hosts of a URL: a host that died with
# its machine (no TCP reset) used all of it, so the pool never reached the replica that had taken over.
CONNECT_TIMEOUT_PER_HOST_S = 5.0


def _hosts(dsn: str) -> list[tuple[str, int | None]]:
    """The hosts of a multi-host URL (``postgresql://app@pg-1:5432,pg-2:5432/db``); [] for one host."""
    spec = urlsplit(dsn).netloc.rpartition("@")[2]
    if "," not in spec:
        return []
    hosts: list[tuple[str, int | None]] = []
    for part in spec.split(","):
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        else:  # no port (or a bare IPv6 address)
            host, port = part, ""
        hosts.append((host, int(port) if port else None))
    return hosts


async def connect(dsn: str | None = None, **options: Any) -> asyncpg.Connection:
    """The pools' ``connect``: asyncpg's, host by host, each with ``CONNECT_TIMEOUT_PER_HOST_S``, in the
    listed order (``target_session_attrs`` is checked on each host by asyncpg)."""
    hosts = _hosts(dsn) if dsn else []
    if not hosts:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_PER_HOST_S, **options)
    failure: BaseException = OSError("no PostgreSQL host to connect to")
    for host, port in hosts:
        try:
            return await asyncpg.connect(dsn, host=host, port=port, timeout=CONNECT_TIMEOUT_PER_HOST_S, **options)
        except TRANSIENT_ERRORS as exc:
            failure = exc
    raise failure  # the last host's error


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook that skips asyncpg's default session reset (``RESET ALL; UNLISTEN *; ...``).

    That reset is one more round trip per query, and we keep no session state to reset: no SET, no
    LISTEN, advisory locks only transaction-scoped. asyncpg still rolls back an open transaction."""


def unavailable(exc: BaseException) -> StoreError:
    return StoreError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")


class Pooled:
    """``async with Pooled(pool) as conn``: a connection of the pool, and PostgreSQL being unreachable (on
    acquiring, using or releasing it) as a ``StoreError``. A class rather than a generator-based context
    manager: it runs twice per transition."""

    __slots__ = ("_acquire", "_pool")

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._acquire = pool.acquire()

    async def __aenter__(self) -> PgConnection:
        try:
            return await self._acquire.__aenter__()
        except TRANSIENT_ERRORS as exc:
            raise unavailable(exc) from exc

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._acquire.__aexit__(exc_type, exc, tb)
        except TRANSIENT_ERRORS as release_error:
            await self._pool.expire_connections()
            raise unavailable(release_error) from release_error
        if isinstance(exc, TRANSIENT_ERRORS):
            # The pool's other connections lead to the same host: each one would fail on its turn (after the
            # command timeout, if that host died with its machine). New ones go to the host that now answers.
            await self._pool.expire_connections()
            raise unavailable(exc) from exc


@asynccontextmanager
async def executor(pool: asyncpg.Pool, *, transaction: bool) -> AsyncIterator[PgExecutor]:
    """A pooled connection as the shared SQL code's ``Executor``, optionally in a transaction."""
    async with Pooled(pool) as conn:
        if not transaction:
            yield PgExecutor(conn)
            return
        async with conn.transaction():
            yield PgExecutor(conn)


async def apply_one_by_one(conn: PgConnection, rows: list[Any], one: str) -> list[bool | BaseException]:
    """Each row in its own statement: a row PostgreSQL refuses fails alone, as ``UnstorableDataError``."""
    results: list[bool | BaseException] = []
    for row in rows:
        try:
            results.append((await conn.execute(one, *row)).endswith(" 1"))
        except TRANSIENT_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            results.append(UnstorableDataError(f"PostgreSQL refused the document: {exc}"))
    return results
