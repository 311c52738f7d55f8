"""PostgreSQL connections as the store uses them: the pool's release hook, "unreachable" as ``StoreError``,
and the one-by-one fallback of a batch PostgreSQL refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
)


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

    __slots__ = ("_acquire",)

    def __init__(self, pool: asyncpg.Pool) -> None:
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
            raise unavailable(release_error) from release_error
        if isinstance(exc, TRANSIENT_ERRORS):
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
