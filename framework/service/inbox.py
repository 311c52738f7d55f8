"""Service inboxes: the record of every taskId a service has answered, kept in the service's own database.

A command's effect and its inbox row commit in one transaction, so a redelivered command finds its
row and gets the recorded reply instead of applying the effect again ("Case 4" of the design notes).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Self

import aiosqlite
import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from framework.errors import ConfigurationError, StoreError
from framework.store.sql.pg_connection import TRANSIENT_ERRORS, connect, keep_session

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")
_PG_PARAM = re.compile(r"\$(\d+)")


class ServiceTransaction(ABC):
    """What a service handler gets to apply its effect in the inbox's transaction.

    SQL uses PostgreSQL's ``$1, $2`` placeholders on every backend. Rows come back as dicts.
    """

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None

    @abstractmethod
    async def claim(self, task_id: str) -> str | None:
        """Reserve ``task_id``; return its recorded reply if it was answered before, else None."""

    @abstractmethod
    async def record(self, task_id: str, reply: str) -> None: ...


class Inbox(ABC):
    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Return if the service's database answers now, else raise ``StoreError`` (a ``/readyz`` check)."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[ServiceTransaction]:
        """An async context manager yielding a ``ServiceTransaction``; commits on success."""


# A refused login (a revoked role) is not transient, but for a readiness check the database is down all the same.
_PING_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


def _check_table(table: str) -> str:
    if not _TABLE_NAME.match(table):
        raise ConfigurationError(f"invalid inbox table name {table!r}", hint="use [a-z0-9_], optionally schema.table")
    return table


class _PostgresTransaction(ServiceTransaction):
    def __init__(self, conn: PoolConnectionProxy[Record], table: str) -> None:
        # The raw asyncpg connection (the pool's proxy of it), for anything the helpers do not cover.
        self.connection = conn
        self._table = table

    async def execute(self, sql: str, *args: Any) -> None:
        await self.connection.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.connection.fetch(sql, *args)]

    async def claim(self, task_id: str) -> str | None:
        inserted = await self.connection.fetchval(
            f"INSERT INTO {self._table} (task_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1", task_id
        )
        if inserted:
            return None
        # The row exists and is committed (our INSERT waited for its transaction): return its reply.
        reply: str | None = await self.connection.fetchval(
            f"SELECT reply FROM {self._table} WHERE task_id = $1", task_id
        )
        return reply

    async def record(self, task_id: str, reply: str) -> None:
        await self.connection.execute(
            f"UPDATE {self._table} SET reply = $2, answered_at = now() WHERE task_id = $1", task_id, reply
        )


class PostgresInbox(Inbox):
    """Inbox in the service's PostgreSQL database. ``setup_sql`` (the service's own tables) runs at open,
    under the same lock as the inbox table, so many service instances can start at once."""

    def __init__(
        self, dsn: str, *, table: str = "stageflow_inbox", setup_sql: Sequence[str] = (), max_size: int = 10
    ) -> None:
        self._dsn = dsn
        self._setup_sql = tuple(setup_sql)
        self._table = _check_table(table)
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._max_size,
                                                   reset=keep_session, connect=connect)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stageflow:{self._table}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ("
                    " task_id text PRIMARY KEY, reply text, answered_at timestamptz)"
                )
                for sql in self._setup_sql:
                    await conn.execute(sql)
        except TRANSIENT_ERRORS as exc:
            raise StoreError(f"cannot reach the service's PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        if self._pool is None:
            raise StoreError("the inbox is not open", hint="call `await inbox.open()` first")
        try:
            async with self._pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1", timeout=5)
        except _PING_ERRORS as exc:
            raise StoreError(f"service database unavailable: {type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ServiceTransaction]:
        if self._pool is None:
            raise StoreError("the inbox is not open", hint="call `await inbox.open()` first")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PostgresTransaction(conn, self._table)
        except TRANSIENT_ERRORS as exc:
            raise StoreError(f"service database unavailable: {exc}") from exc


class _SqliteTransaction(ServiceTransaction):
    def __init__(self, db: aiosqlite.Connection, table: str) -> None:
        self.connection = db
        self._table = table

    async def execute(self, sql: str, *args: Any) -> None:
        await self.connection.execute(_PG_PARAM.sub(r"?\1", sql), args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        cursor = await self.connection.execute(_PG_PARAM.sub(r"?\1", sql), args)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def claim(self, task_id: str) -> str | None:
        rows = await self.fetch(f"SELECT reply FROM {self._table} WHERE task_id = $1", task_id)
        if rows:
            reply: str | None = rows[0]["reply"]
            return reply
        await self.execute(f"INSERT INTO {self._table} (task_id) VALUES ($1)", task_id)
        return None

    async def record(self, task_id: str, reply: str) -> None:
        await self.execute(
            f"UPDATE {self._table} SET reply = $2, answered_at = CURRENT_TIMESTAMP WHERE task_id = $1",
            task_id, reply,
        )


class SqliteInbox(Inbox):
    """Inbox in a SQLite file (the embedded default); transactions are serialised on one connection."""

    def __init__(self, path: str, *, table: str = "stageflow_inbox", setup_sql: Sequence[str] = ()) -> None:
        self._path = path
        self._setup_sql = tuple(setup_sql)
        self._table = _check_table(table)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (task_id TEXT PRIMARY KEY, reply TEXT, answered_at TEXT)"
            )
            for sql in self._setup_sql:
                await self._db.execute(sql)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite inbox {self._path!r}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        if self._db is None:
            raise StoreError("the inbox is not open", hint="call `await inbox.open()` first")
        try:
            await self._db.execute("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:  # aiosqlite raises ValueError once its connection is closed
            raise StoreError(f"SQLite inbox {self._path!r} unavailable: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ServiceTransaction]:
        if self._db is None:
            raise StoreError("the inbox is not open", hint="call `await inbox.open()` first")
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._db, self._table)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")


class _NoTransaction(ServiceTransaction):
    connection = None

    async def execute(self, sql: str, *args: Any) -> None:
        raise StoreError("this service has no database (StatelessInbox)")

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise StoreError("this service has no database (StatelessInbox)")

    async def claim(self, task_id: str) -> str | None:
        return None

    async def record(self, task_id: str, reply: str) -> None:
        return None


class StatelessInbox(Inbox):
    """An inbox that remembers nothing: every delivery runs the handler again.

    For handlers whose effect is deduped elsewhere, such as the HTTP adapter (the API dedupes by the
    ``Idempotency-Key`` derived from the taskId), where holding a database transaction open for the
    length of a remote call would only cost connections."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None  # no database: nothing that could be down

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ServiceTransaction]:
        yield _NoTransaction()
