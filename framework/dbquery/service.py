"""The ``db_query`` service: one connection's SQL, run in the inbox's transaction of that same database.

The inbox table (``stageflow_dbquery_inbox``) lives in the target database, so an insert and the row that
records its taskId and reply commit together: a redelivered command gets the recorded reply and the insert
is not run again. A command's payload (built by the blueprint compiler)::

    {"sql": "INSERT INTO t (a) VALUES (:a) RETURNING id", "params": {"a": 5}, "mode": "insert", "output": "single"}

Replies: ``{"row": {...} | null, "count": n}`` for ``output: single`` (a select's one row; a write's affected
rows, and its RETURNING row if it has one), ``{"rows": [...], "count": n}`` for ``multiple``. Failures:

* SQL the database refuses (syntax, constraint, unknown table...) and a result over the row or byte limit
  are final ``ServiceError`` s carrying the database's message: the same SQL would fail again.
* The database unreachable, a serialisation failure, a deadlock or too many connections: the command is
  left for redelivery (``StoreError``), so it runs again once the database answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiosqlite
import asyncpg
import orjson

from framework.dbquery.sql import NamedSql, SqlError
from framework.dbquery.values import json_row, pg_parameter, sqlite_parameter
from framework.errors import ServiceError, StoreError
from framework.messages import ServiceCommand
from framework.service.inbox import ServiceTransaction

INBOX_TABLE = "stageflow_dbquery_inbox"
# Classes of SQLSTATE that say "try again" rather than "this SQL is wrong": 08 connection, 40 rollback
# (serialisation, deadlock), 53 resources, 57 operator intervention (but 57014, a cancelled statement, is our
# own timeout: the same query would run as long again).
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_STATEMENT_TIMEOUT = "57014"


@dataclass(frozen=True, slots=True)
class Limits:
    max_rows: int = 1000
    max_result_bytes: int = 100_000
    statement_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class _Query:
    sql: NamedSql
    params: Mapping[str, Any]
    mode: str
    output: str


class DbQueryHandler:
    """The handler of ``dbquery.<connection>``; host it with the connection's ``PostgresInbox``/``SqliteInbox``."""

    def __init__(self, connection: str, limits: Limits | None = None) -> None:
        self.connection = connection
        self.limits = limits or Limits()

    async def handle(self, command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
        query = _parse(command.payload)
        conn = getattr(tx, "connection", None)
        if isinstance(conn, aiosqlite.Connection):
            rows, count = await self._sqlite(conn, query)
        elif conn is not None:
            rows, count = await self._postgres(conn, query)
        else:
            raise ServiceError(f"connection {self.connection!r} has no database transaction (a StatelessInbox?)")
        if query.output == "multiple":
            reply: dict[str, Any] = {"rows": rows, "count": count}
        elif query.mode == "select" and len(rows) > 1:
            raise ServiceError(f"{self._where()}: output 'single' got more than one row; add LIMIT 1, narrow the "
                               "WHERE, or use output 'multiple'")
        else:
            reply = {"row": rows[0] if rows else None, "count": count}
        size = len(orjson.dumps(reply))
        if size > self.limits.max_result_bytes:
            raise ServiceError(f"{self._where()}: the result of {size} bytes is over the "
                               f"{self.limits.max_result_bytes}-byte limit (STAGEFLOW_DBQUERY_MAX_RESULT_BYTES); "
                               "select fewer rows or columns")
        return reply

    def _where(self) -> str:
        return f"db_query on {self.connection!r}"

    def _row_limit(self, query: _Query) -> int:
        """Rows to read at most: one past what is allowed, so "too many" is seen without reading them all."""
        return (self.limits.max_rows if query.output == "multiple" else 1) + 1

    def _too_many(self, query: _Query, rows: list[dict[str, Any]]) -> None:
        if query.output == "multiple" and len(rows) > self.limits.max_rows:
            raise ServiceError(f"{self._where()}: more than {self.limits.max_rows} rows (STAGEFLOW_DBQUERY_MAX_ROWS); "
                               "narrow the query or page through it with LIMIT and a key")

    async def _postgres(self, conn: Any, query: _Query) -> tuple[list[dict[str, Any]], int]:
        try:
            # SET LOCAL: the timeout ends with this transaction, so the pooled connection keeps no trace of it.
            await conn.execute(f"SET LOCAL statement_timeout = {int(self.limits.statement_timeout_s * 1000)}")
            statement = await conn.prepare(query.sql.numbered("$"))
            try:
                args = [pg_parameter(query.params.get(name), t.name, name)
                        for name, t in zip(query.sql.names, statement.get_parameters(), strict=True)]
            except ValueError as exc:
                raise ServiceError(f"{self._where()}: {exc}") from None
            if query.mode == "select":
                rows: list[dict[str, Any]] = []
                async for record in statement.cursor(*args):
                    rows.append(json_row(record))
                    if len(rows) >= self._row_limit(query):
                        break
                self._too_many(query, rows)
                return rows, len(rows)
            records = await statement.fetch(*args)
            rows = [json_row(r) for r in records]
            self._too_many(query, rows)
            status = statement.get_statusmsg() or ""  # "INSERT 0 3", "UPDATE 2"
            count = int(status.split()[-1]) if status.split() and status.split()[-1].isdigit() else len(rows)
            return rows, count
        except asyncpg.PostgresError as exc:
            state = getattr(exc, "sqlstate", "") or ""
            if state[:2] in _TRANSIENT_CLASSES and state != _STATEMENT_TIMEOUT:
                raise StoreError(f"{self._where()}: {exc} (SQLSTATE {state}); will be redelivered") from exc
            raise ServiceError(f"{self._where()}: the database refused it: {exc} (SQLSTATE {state})") from None

    async def _sqlite(self, conn: aiosqlite.Connection, query: _Query) -> tuple[list[dict[str, Any]], int]:
        args = [sqlite_parameter(query.params.get(name)) for name in query.sql.names]
        try:
            cursor = await conn.execute(query.sql.numbered("?"), args)
            names = [d[0] for d in cursor.description or ()]
            fetched = list(await cursor.fetchmany(self._row_limit(query))) if names else []
            if query.mode != "select":
                fetched += await cursor.fetchall()  # a write's RETURNING rows: all of them, or it is not finished
            rows = [json_row(zip(names, row, strict=True)) for row in fetched]
            self._too_many(query, rows)
            return rows, len(rows) if query.mode == "select" or names else cursor.rowcount
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"{self._where()}: {exc}; will be redelivered") from exc
            raise ServiceError(f"{self._where()}: the database refused it: {exc}") from None
        except sqlite3.Error as exc:
            raise ServiceError(f"{self._where()}: the database refused it: {exc}") from None


def _parse(payload: Any) -> _Query:
    """The command's query; a malformed one is final (sending it again cannot help)."""
    if not isinstance(payload, Mapping):
        raise ServiceError("a db_query command's payload must be an object with sql, params, mode and output")
    unknown = set(payload) - {"sql", "params", "mode", "output"}
    if unknown:
        raise ServiceError(f"unknown db_query fields: {', '.join(sorted(unknown))}")
    params = payload.get("params") or {}
    if not isinstance(params, Mapping):
        raise ServiceError("db_query params must be an object of name -> value")
    try:
        sql = NamedSql.parse(payload.get("sql"))  # type: ignore[arg-type]  # parse() refuses a non-string
        sql.check_mode(str(payload.get("mode")), str(payload.get("output", "single")))
    except SqlError as exc:
        raise ServiceError(f"db_query: {exc}") from None
    missing = [name for name in sql.names if name not in params]
    if missing:
        raise ServiceError(f"db_query: no value for {', '.join(':' + n for n in missing)} in params")
    return _Query(sql, params, str(payload["mode"]), str(payload.get("output", "single")))
