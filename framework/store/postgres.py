"""PostgreSQL store (asyncpg): the production store.

One row per process in ``processes`` (the document as JSONB plus the columns queries need) and one row
per transition in ``history``. A commit is a single statement: a version-checked UPDATE whose CTE also
inserts the history row, so a transition costs one round trip and one commit.

Under load, the concurrent loads, commits and creates of a worker (or gateway) are batched (``Batcher``):
one statement loads, commits or creates many documents, each commit still compare-and-set on its own
version, and the batch is one transaction, so one WAL flush serves many transitions.

The tables, the reads and the rarer writes are the SQL backends' shared ones (``framework.store.sql``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import orjson

from framework.document import ProcessDocument
from framework.errors import ConfigurationError, StoreError
from framework.state import HistoryEntry
from framework.store.batcher import Batcher
from framework.store.pg_fanout import PostgresFanOuts, fan_out_statements
from framework.store.records import ProcessFilter
from framework.store.sql.common import SqlStore
from framework.store.sql.deploy import DeployStatements
from framework.store.sql.dialect import POSTGRESQL
from framework.store.sql.executor import Executor
from framework.store.sql.migrate import migrate
from framework.store.sql.pg_connection import (
    TRANSIENT_ERRORS,
    Pooled,
    apply_one_by_one,
    connect,
    executor,
    keep_session,
)
from framework.store.sql.rows import CommitRow, CreateRow, commit_row, create_row
from framework.store.sql.statements import (
    COMMIT_SET,
    CREATE_COLUMNS,
    CREATE_VALUES,
    ISOLATED_RUN_TTL_S,
    Statements,
)
from framework.store.sql.workflows import WorkflowStatements

__all__ = ["PostgresStore", "TRANSIENT_ERRORS", "keep_session"]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _statements(p: str) -> dict[str, str]:
    """The batched and single-statement document writes, for the table prefix ``p``."""
    return {
        # a create and its history row (``create_row``)
        "insert": f"""
            WITH ins AS (
                INSERT INTO {p}processes ({CREATE_COLUMNS}) VALUES ({CREATE_VALUES})
                ON CONFLICT DO NOTHING
                RETURNING process_id, version)
            INSERT INTO {p}history (process_id, version, entry)
            SELECT process_id, version, $9::jsonb FROM ins""",
        # the same for many processes; returns the id of each one inserted (not one whose id or key exists)
        "insert_many": f"""
            WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                                     $7::float8[], $8::float8[], $9::text[], $10::bool[], $11::text[], $12::text[],
                                     $13::float8[], $14::int[], $15::text[], $16::text[])
                    AS i(process_id, case_name, client_key, status, version, doc, due_at, created_at, entry,
                         retrying, waiting_summary, search, ended_at, case_version, stage, reach)),
            ins AS (
                INSERT INTO {p}processes ({CREATE_COLUMNS})
                SELECT process_id, case_name, client_key, status, version, doc::jsonb, due_at, created_at,
                       created_at, retrying, waiting_summary, search::jsonb, ended_at, case_version, stage, reach,
                       version
                FROM input
                ON CONFLICT DO NOTHING
                RETURNING process_id, version),
            hist AS (INSERT INTO {p}history (process_id, version, entry)
                     SELECT ins.process_id, ins.version, input.entry::jsonb FROM ins JOIN input USING (process_id))
            SELECT process_id FROM ins""",
        # a commit and its history row (``commit_row``)
        "commit": f"""
            WITH upd AS (
                UPDATE {p}processes SET {COMMIT_SET} WHERE process_id = $1 AND version = $2
                RETURNING process_id)
            INSERT INTO {p}history (process_id, version, entry)
            SELECT process_id, $2 + 1, $7::jsonb FROM upd""",
        # the same for many documents: each row is checked against its own expected version
        "commit_many": f"""
            WITH input AS (
                SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::float8[],
                                     $7::text[], $8::float8[], $9::bool[], $10::text[], $11::text[], $12::float8[],
                                     $13::int[], $14::text[], $15::text[])
                    AS i(process_id, expected, doc, status, due_at, updated_at, entry, expires_at, retrying,
                         waiting_summary, search, ended_at, case_version, stage, reach)),
            upd AS (
                UPDATE {p}processes p
                SET doc = i.doc::jsonb, version = i.expected + 1, status = i.status, due_at = i.due_at,
                    updated_at = i.updated_at, expires_at = i.expires_at, retrying = i.retrying,
                    waiting_summary = i.waiting_summary, search = i.search::jsonb, ended_at = i.ended_at,
                    case_version = i.case_version, stage = i.stage, reach = i.reach, derived_version = i.expected + 1
                FROM input i
                WHERE p.process_id = i.process_id AND p.version = i.expected
                RETURNING p.process_id, p.version, i.entry),
            hist AS (INSERT INTO {p}history (process_id, version, entry)
                     SELECT process_id, version, entry::jsonb FROM upd)
            SELECT process_id FROM upd""",
        "load_many": f"SELECT process_id, doc FROM {p}processes WHERE process_id = ANY($1::text[])",
        # the document and its history as one JSON array, in one round trip: two primary-key index scans
        "load_with_history": f"""
            SELECT p.doc, coalesce((SELECT json_agg(h.entry ORDER BY h.version) FROM {p}history h
                                    WHERE h.process_id = p.process_id), '[]') AS history
            FROM {p}processes p WHERE p.process_id = $1""",
        "expire": f"""
            WITH gone AS (
                DELETE FROM {p}processes WHERE process_id IN (
                    SELECT process_id FROM {p}processes WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING process_id),
            history AS (DELETE FROM {p}history WHERE process_id IN (SELECT process_id FROM gone)),
            fanouts AS (DELETE FROM {p}fanouts WHERE process_id IN (SELECT process_id FROM gone)),
            items AS (DELETE FROM {p}fan_items WHERE process_id IN (SELECT process_id FROM gone)),
            suspects AS (DELETE FROM {p}isolated_runs WHERE updated_at < $1 - {ISOLATED_RUN_TTL_S})
            SELECT count(*) FROM gone""",
    }


class PostgresStore(PostgresFanOuts, SqlStore):
    def __init__(self, dsn: str, *, schema: str = "stageflow", min_size: int = 2, max_size: int = 10) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(f"invalid PostgreSQL schema name {schema!r}", hint="use [a-z0-9_]")
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self.applied_migrations: tuple[int, ...] = ()  # what the last open() applied (logs, tests)
        self._loads: Batcher[str, str | None] = Batcher(self._load_batch)
        self._commits: Batcher[CommitRow, bool] = Batcher(self._commit_batch, key=lambda c: c[0])
        self._creates: Batcher[CreateRow, bool] = Batcher(self._create_batch, key=lambda c: c[0])
        self._sql = Statements(POSTGRESQL, schema)
        self._workflow_sql = WorkflowStatements(POSTGRESQL, self._sql.prefix)
        self._deploy = DeployStatements(POSTGRESQL, self._sql.prefix)
        self._pg = _statements(self._sql.prefix)
        self._sql_commit_fan_out, self._sql_completion = fan_out_statements(self._sql.prefix)

    def observe_batches(self, callback: Callable[[str, int], None]) -> None:
        """Tell ``callback(kind, size)`` the size of every batch of loads, commits and creates."""
        for kind, batcher in (("load", self._loads), ("commit", self._commits), ("create", self._creates)):
            batcher.on_batch = functools.partial(callback, kind)

    @property
    def schema(self) -> str:
        return self._schema

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, command_timeout=30,
                reset=keep_session, connect=connect,
            )
            async with executor(self._pool, transaction=True) as db:
                # Many workers may start at once: the first migrates, the others wait on this lock, then find
                # every migration recorded. One transaction: an upgrade that fails changes nothing.
                await db.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stageflow:{self._schema}")
                self.applied_migrations = await migrate(db, POSTGRESQL, schema=self._schema)
        except TRANSIENT_ERRORS as exc:
            raise StoreError(
                f"cannot reach PostgreSQL: {exc}", hint="check STAGEFLOW_STORE_URL and that PostgreSQL is running"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1", timeout=5)

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open", hint="call `await store.open()` first")
        return self._pool

    def _connection(self) -> Pooled:
        return Pooled(self._open_pool())

    def _session(self) -> AbstractAsyncContextManager[Executor]:
        return executor(self._open_pool(), transaction=False)

    def _transaction(self) -> AbstractAsyncContextManager[Executor]:
        return executor(self._open_pool(), transaction=True)

    async def create(
        self, doc: ProcessDocument, entry: HistoryEntry, *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        # Concurrent starts (a burst of API calls, a fan-out's children) go in one statement, like commits.
        if await self._creates.submit(create_row(doc, entry, due_at)):
            return doc, True
        async with self._connection() as conn:
            raw = await conn.fetchval(self._sql.by_key, doc.case, doc.client_key)
        if raw is None:
            raise StoreError(f"process {doc.process_id} could not be created (id collision)")
        return ProcessDocument.from_json(raw), False

    async def _create_batch(self, creates: list[CreateRow]) -> list[bool | BaseException]:
        # Locks: the client key's unique index entry (when there is one), then the process id's.
        return await self._apply_rows(creates, many=self._pg["insert_many"], one=self._pg["insert"],
                                      lock_order=lambda c: (c[1], c[2] or "", c[0]))

    async def load(self, process_id: str) -> ProcessDocument | None:
        raw = await self._loads.submit(process_id)
        return None if raw is None else ProcessDocument.from_json(raw)

    async def _load_batch(self, process_ids: list[str]) -> list[str | BaseException | None]:
        async with self._connection() as conn:
            if len(process_ids) == 1:
                return [await conn.fetchval(self._sql.load, process_ids[0])]
            rows = await conn.fetch(self._pg["load_many"], process_ids)
        found = {r["process_id"]: r["doc"] for r in rows}
        return [found.get(process_id) for process_id in process_ids]

    async def commit(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        return await self._commits.submit(commit_row(doc, entry, expected_version, due_at, expires_at))

    async def _commit_batch(self, commits: list[CommitRow]) -> list[bool | BaseException]:
        return await self._apply_rows(commits, many=self._pg["commit_many"], one=self._pg["commit"],
                                      lock_order=lambda c: c[0])

    async def _apply_rows(
        self, rows: list[Any], *, many: str, one: str, lock_order: Callable[[Any], Any]
    ) -> list[bool | BaseException]:
        """Write ``rows`` (tuples starting with the process id) in one statement, ``many``, which returns the id
        of each row it applied; whether each row was applied, in order. If PostgreSQL refuses the statement
        (e.g. one document it cannot store), the rows go one by one (``one``), so only that row's caller fails
        (with ``UnstorableDataError``)."""
        async with self._connection() as conn:
            if len(rows) == 1:
                return await apply_one_by_one(conn, rows, one)
            # In ``lock_order``, so two batches (two workers, two gateways) take the row and unique-index locks
            # they share in the same order and never deadlock.
            ordered = sorted(rows, key=lock_order)
            try:
                applied = await conn.fetch(many, *(list(column) for column in zip(*ordered, strict=True)))
            except TRANSIENT_ERRORS:
                raise
            except asyncpg.PostgresError:
                return await apply_one_by_one(conn, rows, one)
        done = {r["process_id"] for r in applied}
        return [row[0] in done for row in rows]

    async def load_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]] | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._pg["load_with_history"], process_id)
        if row is None:
            return None
        return ProcessDocument.from_json(row["doc"]), orjson.loads(row["history"])

    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:
        sql, params = self._sql.count_matching(where)
        async with self._connection() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            try:
                count: int = await conn.fetchval(sql, *params)
            except asyncpg.QueryCanceledError:
                return None
        return count

    async def delete_expired(self, now: float, limit: int) -> int:
        async with self._connection() as conn:
            deleted: int = await conn.fetchval(self._pg["expire"], now, limit)
        return deleted
