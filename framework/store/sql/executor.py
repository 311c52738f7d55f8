"""One connection (or transaction) as the shared SQL code sees it: rows, a row count, many rows, a script.

The hot paths of each backend use their driver directly; everything written once (``common``, ``migrate``)
goes through an ``Executor``, rows read by position.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import aiosqlite
import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

# A connection of its own, or one borrowed from a pool (which forwards to one). Only the stubs make the proxy
# generic, hence the string.
PgConnection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class Executor(Protocol):
    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...

    async def changed(self, sql: str, *args: Any) -> int:
        """Run a write; how many rows it changed."""

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def execute(self, sql: str) -> None:
        """One statement without parameters whose result is not read (DDL). One: SQLite's scripts commit."""

    async def column_names(self, schema: str | None, table: str) -> set[str]: ...


class PgExecutor:
    __slots__ = ("conn",)

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        rows: list[Any] = await self.conn.fetch(sql, *args)  # Records index like tuples (untyped as such)
        return rows

    async def changed(self, sql: str, *args: Any) -> int:
        status = await self.conn.execute(sql, *args)  # "UPDATE 1", "INSERT 0 1", "DELETE 3"
        return int(status.rsplit(" ", 1)[-1])

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def column_names(self, schema: str | None, table: str) -> set[str]:
        rows = await self.conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            schema, table,
        )
        return {r[0] for r in rows}


class SqliteExecutor:
    __slots__ = ("db",)

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self.db.execute_fetchall(sql, args))

    async def changed(self, sql: str, *args: Any) -> int:
        return (await self.db.execute(sql, args)).rowcount

    async def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(sql, rows)

    async def execute(self, sql: str) -> None:
        await self.db.execute(sql)

    async def column_names(self, schema: str | None, table: str) -> set[str]:
        return {r[0] for r in await self.rows("SELECT name FROM pragma_table_info(?)", table)}
