"""SQLite store (aiosqlite): the embedded default, for demos and users' own tests. No server needed.

The tables, statements and most methods are the SQL backends' shared ones (``framework.store.sql``); here
are the connection, and the writes SQLite makes in several statements of one transaction where PostgreSQL
makes one. One connection, with transactions serialised by a lock, which is plenty for one process on one
machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from framework.document import ProcessDocument
from framework.errors import StoreError
from framework.fanout import NewFanOut
from framework.state import HistoryEntry
from framework.store.sql.common import Completion, SqlStore
from framework.store.sql.deploy import DeployStatements
from framework.store.sql.dialect import SQLITE
from framework.store.sql.executor import Executor, SqliteExecutor
from framework.store.sql.migrate import migrate
from framework.store.sql.rows import CommitRow, commit_row, create_row
from framework.store.sql.statements import FAN_STATE_COLUMNS, ITEM_COLUMNS, Statements
from framework.store.sql.workflows import WorkflowStatements

_sql = SQLITE.sql
_INSERT_FAN_OUT = _sql(
    f"INSERT INTO fanouts ({FAN_STATE_COLUMNS}, process_id) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8)")
_INSERT_ITEM = _sql(
    "INSERT INTO fan_items (process_id, grp, idx, status, spec, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
_FINISH_ITEM = _sql("UPDATE fan_items SET status = $4, result = $5, error = $6, released = $7, updated_at = $8"
                    " WHERE process_id = $1 AND grp = $2 AND idx = $3 AND status = 'dispatched'")
_COUNT_ITEM = _sql("UPDATE fanouts SET next_index = $3, done = $4, failed = $5, decided = $6"
                   " WHERE process_id = $1 AND grp = $2")
_RELEASE_ITEM = _sql(f"UPDATE fan_items SET status = 'dispatched', updated_at = $4"
                     f" WHERE process_id = $1 AND grp = $2 AND idx = $3 RETURNING {ITEM_COLUMNS}")
_EXPIRED = _sql("SELECT process_id FROM processes WHERE expires_at <= $1 LIMIT $2")
_EXPIRED_TABLES = ("history", "fanouts", "fan_items", "processes")  # the process row last
_WAL_TRIES = 100  # 10 s


async def _write_ahead_log(db: aiosqlite.Connection) -> None:
    """Switch the file to WAL. SQLite answers "locked" at once, without waiting, while another process holds
    the file (one opening it at the same time): try again for a while."""
    for _ in range(_WAL_TRIES - 1):
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            await asyncio.sleep(0.1)
    await db.execute("PRAGMA journal_mode=WAL")


class SqliteStore(SqlStore):
    def __init__(self, path: str = "stageflow.db") -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._sql = Statements(SQLITE, None)
        self._workflow_sql = WorkflowStatements(SQLITE, self._sql.prefix)
        self._deploy = DeployStatements(SQLITE, "")
        self.applied_migrations: tuple[int, ...] = ()  # what the last open() applied (logs, tests)

    async def open(self) -> None:
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            await _write_ahead_log(self._db)
            await self._db.execute("PRAGMA synchronous=NORMAL")
            async with self._transaction() as db:  # BEGIN IMMEDIATE: other processes opening the file wait
                self.applied_migrations = await migrate(db, SQLITE, schema=None)
        except BaseException as exc:
            await self.close()  # its thread would keep the process alive
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite database {self._path!r}: {exc}") from exc
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    def _open_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is not open", hint="call `await store.open()` first")
        return self._db

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Executor]:
        db = self._open_db()
        async with self._lock:
            yield SqliteExecutor(db)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Executor]:
        db = self._open_db()
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteExecutor(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def create(
        self, doc: ProcessDocument, entry: HistoryEntry, *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        row = create_row(doc, entry, due_at)
        async with self._transaction() as db:
            if await db.changed(self._sql.insert, *row) == 1:
                await db.changed(self._sql.insert_history, doc.process_id, doc.version, row[8])
                return doc, True
            found = await db.rows(self._sql.by_key, doc.case, doc.client_key)
        if not found:
            raise StoreError(f"process {doc.process_id} could not be created (id collision)")
        return ProcessDocument.from_json(found[0][0]), False

    async def commit(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        row = commit_row(doc, entry, expected_version, due_at, expires_at)
        async with self._transaction() as db:
            return await self._commit_in(db, row)

    async def _commit_in(self, db: Executor, row: CommitRow) -> bool:
        if await db.changed(self._sql.update, *row) != 1:
            return False
        await db.changed(self._sql.insert_history, row[0], row[1] + 1, row[6])
        return True

    async def commit_fan_out(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        row, s = commit_row(doc, entry, expected_version, due_at, None), fan_out.initial_state()
        async with self._transaction() as db:
            if not await self._commit_in(db, row):
                return False
            await db.changed(_INSERT_FAN_OUT, s.group, s.total, s.window, s.tolerate, s.first, s.next_index,
                             s.decided, doc.process_id)
            await db.many(_INSERT_ITEM, [
                (doc.process_id, s.group, i, "dispatched" if i < s.next_index else "pending", spec, doc.updated_at)
                for i, spec in enumerate(fan_out.specs)
            ])
            return True

    async def _write_completion(self, db: Executor, completion: Completion) -> tuple[bool, Sequence[Any] | None]:
        process_id, group, _, _, _, _, release, now, *counters = completion
        if await db.changed(_FINISH_ITEM, *completion[:8]) != 1:
            return False, None
        await db.changed(_COUNT_ITEM, process_id, group, *counters)
        released = [] if release is None else await db.rows(_RELEASE_ITEM, process_id, group, release, now)
        return True, released[0] if released else None

    async def delete_expired(self, now: float, limit: int) -> int:
        async with self._transaction() as db:
            ids = [(r[0],) for r in await db.rows(_EXPIRED, now, limit)]
            for table in _EXPIRED_TABLES:
                await db.many(f"DELETE FROM {table} WHERE process_id = ?", ids)
            await db.changed(self._sql.forget_stale_runs, now)
            return len(ids)
