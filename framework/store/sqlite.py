"""SQLite store (aiosqlite): the embedded default, for demos and users' own tests. No server needed.

Same tables and the same compare-and-set semantics as the PostgreSQL store; one connection, with
transactions serialised by a lock, which is plenty for one process on one machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import orjson

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemCompletion, ItemRow, NewFanOut, complete
from framework.errors import StoreError
from framework.store.base import RETRYING, Job, PageKey, ProcessFilter, ProcessStore, ScheduleRow, summary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (
    process_id  TEXT PRIMARY KEY,
    case_name   TEXT NOT NULL,
    client_key  TEXT,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL,
    due_at      REAL,
    expires_at  REAL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    UNIQUE (case_name, client_key)
);
CREATE INDEX IF NOT EXISTS processes_due_at ON processes (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_expires_at ON processes (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_created ON processes (created_at DESC, process_id DESC);
CREATE INDEX IF NOT EXISTS processes_status_created ON processes (status, created_at DESC, process_id DESC);
CREATE TABLE IF NOT EXISTS isolated_runs (
    key         TEXT PRIMARY KEY,
    runs        INTEGER NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fanouts (
    process_id  TEXT NOT NULL,
    grp         INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    win         INTEGER NOT NULL,
    tolerate    INTEGER NOT NULL,
    first       INTEGER NOT NULL,
    next_index  INTEGER NOT NULL,
    done        INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    decided     TEXT,
    PRIMARY KEY (process_id, grp)
);
CREATE TABLE IF NOT EXISTS fan_items (
    process_id  TEXT NOT NULL,
    grp         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    status      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    released    INTEGER,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (process_id, grp, idx)
);
CREATE TABLE IF NOT EXISTS schedules (
    name          TEXT PRIMARY KEY,
    definition    TEXT NOT NULL,
    timing        TEXT NOT NULL,
    next_fire_at  REAL NOT NULL,
    paused        INTEGER NOT NULL,
    last_tick     REAL,
    last_fired_at REAL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    job         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, job_id DESC);
CREATE TABLE IF NOT EXISTS history (
    process_id  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    entry       TEXT NOT NULL,
    PRIMARY KEY (process_id, version)
);
"""


class SqliteStore(ProcessStore):
    def __init__(self, path: str = "stageflow.db") -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self._path!r}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._db is None:
            raise StoreError("the SQLite store is not open", hint="call `await store.open()` first")
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def create(
        self, doc: ProcessDocument, entry: dict[str, Any], *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO processes (process_id, case_name, client_key, status, version, doc, due_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (doc.process_id, doc.case, doc.client_key, doc.status.value, doc.version,
                 doc.to_json().decode(), due_at, doc.created_at, doc.created_at),
            )
            if cursor.rowcount == 1:
                await db.execute(
                    "INSERT INTO history (process_id, version, entry) VALUES (?, ?, ?)",
                    (doc.process_id, doc.version, orjson.dumps(entry).decode()),
                )
                return doc, True
            rows = await db.execute_fetchall(
                "SELECT doc FROM processes WHERE case_name = ? AND client_key = ?", (doc.case, doc.client_key)
            )
        if not rows:
            raise StoreError(f"process {doc.process_id} could not be created (id collision)")
        return ProcessDocument.from_json(rows[0][0]), False

    async def load(self, process_id: str) -> ProcessDocument | None:
        rows = await self._fetch("SELECT doc FROM processes WHERE process_id = ?", (process_id,))
        return ProcessDocument.from_json(rows[0][0]) if rows else None

    async def commit(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        async with self._transaction() as db:
            return await self._commit_in(db, doc, entry, expected_version=expected_version, due_at=due_at,
                                         expires_at=expires_at)

    @staticmethod
    async def _commit_in(
        db: aiosqlite.Connection, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int,
        due_at: float | None, expires_at: float | None,
    ) -> bool:
        cursor = await db.execute(
            "UPDATE processes SET doc = ?, version = ?, status = ?, due_at = ?, updated_at = ?, expires_at = ?"
            " WHERE process_id = ? AND version = ?",
            (doc.to_json().decode(), expected_version + 1, doc.status.value, due_at, doc.updated_at,
             expires_at, doc.process_id, expected_version),
        )
        if cursor.rowcount != 1:
            return False
        await db.execute(
            "INSERT INTO history (process_id, version, entry) VALUES (?, ?, ?)",
            (doc.process_id, expected_version + 1, orjson.dumps(entry).decode()),
        )
        return True

    async def history(self, process_id: str) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT entry FROM history WHERE process_id = ? ORDER BY version", (process_id,)
        )
        return [orjson.loads(r[0]) for r in rows]

    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT status, count(*) FROM processes WHERE ? IS NULL OR case_name = ? GROUP BY status", (case, case)
        )
        return {status: n for status, n in rows}

    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        rows = await self._fetch("SELECT doc FROM processes WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit))
        return [ProcessDocument.from_json(r[0]) for r in rows]

    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE processes SET due_at = ? WHERE process_id = ? AND version = ? AND due_at <= ?",
                (next_at, process_id, version, now),
            )
            return cursor.rowcount == 1

    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        rows = await self._fetch(
            "SELECT process_id FROM processes WHERE (?1 IS NULL OR case_name = ?1) AND (?2 IS NULL OR status = ?2)"
            " AND (?3 IS NULL OR json_extract(doc, '$.error.stage') = ?3)"
            " AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at < ?5)"
            " AND (?6 IS NULL OR process_id > ?6) ORDER BY process_id LIMIT ?7",
            (where.case, where.status, where.failed_stage, where.created_after, where.created_before, after, limit),
        )
        return [r[0] for r in rows]

    async def list_page(
        self, where: ProcessFilter, *, after: PageKey | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], PageKey | None]:
        conditions, params = _conditions(where)
        if after is not None:
            conditions.append("(created_at, process_id) < (?, ?)")
            params.extend(after)
        rows = await self._fetch(
            "SELECT process_id, case_name, status, client_key, created_at, updated_at,"
            " json_extract(doc, '$.case_version'), json_extract(doc, '$.stage'), json_extract(doc, '$.ended_at'),"
            " json_extract(doc, '$.waiting'), json_extract(doc, '$.error') FROM processes"
            f" {'WHERE ' + ' AND '.join(conditions) if conditions else ''}"
            " ORDER BY created_at DESC, process_id DESC LIMIT ?",
            (*params, limit),
        )
        items = [
            summary(
                process_id=r[0], case=r[1], status=r[2], client_key=r[3], created_at=r[4], updated_at=r[5],
                case_version=r[6], stage=r[7], ended_at=r[8], waiting=_json(r[9]), error=_json(r[10]),
            )
            for r in rows
        ]
        return items, ((rows[-1][4], rows[-1][0]) if rows else None)

    async def count_by_case_and_status(self) -> list[tuple[str, str, int]]:
        rows = await self._fetch("SELECT case_name, status, count(*) FROM processes GROUP BY case_name, status", ())
        return [(c, s, n) for c, s, n in rows]

    async def recent_stage_durations(self, processes: int) -> list[tuple[str, str, float]]:
        rows = await self._fetch(
            "WITH recent AS (SELECT process_id, case_name FROM processes"
            " ORDER BY created_at DESC, process_id DESC LIMIT ?)"
            " SELECT r.case_name, json_extract(h.entry, '$.stage'), json_extract(h.entry, '$.duration_ms')"
            " FROM recent r JOIN history h ON h.process_id = r.process_id"
            " WHERE json_extract(h.entry, '$.duration_ms') IS NOT NULL AND json_extract(h.entry, '$.stage') IS NOT NULL",
            (processes,),
        )
        return [(c, s, float(ms)) for c, s, ms in rows]

    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:  # noqa: ARG002
        conditions, params = _conditions(where)  # one local file: counting is cheap enough to just do it
        rows = await self._fetch(
            f"SELECT count(*) FROM processes {'WHERE ' + ' AND '.join(conditions) if conditions else ''}", tuple(params)
        )
        return int(rows[0][0])

    async def create_job(self, job: Job) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO jobs (job_id, status, owner, job, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (job.job_id, job.status, job.owner, job.to_json(), job.created_at, job.updated_at),
            )

    async def save_job(self, job: Job) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET status = ?, job = ?, updated_at = ? WHERE job_id = ? AND owner = ?",
                (job.status, job.to_json(), job.updated_at, job.job_id, job.owner),
            )
            return cursor.rowcount == 1

    async def load_job(self, job_id: str) -> Job | None:
        rows = await self._fetch("SELECT job FROM jobs WHERE job_id = ?", (job_id,))
        return Job.from_json(rows[0][0]) if rows else None

    async def list_jobs(self, *, limit: int) -> list[Job]:
        rows = await self._fetch("SELECT job FROM jobs ORDER BY created_at DESC, job_id DESC LIMIT ?", (limit,))
        return [Job.from_json(r[0]) for r in rows]

    async def claim_job(self, job_id: str, *, owner: str, now: float, from_statuses: tuple[str, ...]) -> Job | None:
        async with self._transaction() as db:
            rows = list(await db.execute_fetchall("SELECT job, status FROM jobs WHERE job_id = ?", (job_id,)))
            if not rows or rows[0][1] not in from_statuses:
                return None
            job = Job.from_json(rows[0][0])
            job.status, job.owner, job.updated_at, job.error, job.ended_at = "running", owner, now, None, None
            await db.execute(
                "UPDATE jobs SET status = ?, owner = ?, job = ?, updated_at = ? WHERE job_id = ?",
                (job.status, owner, job.to_json(), now, job_id),
            )
            return job

    async def interrupt_stale_jobs(self, *, stale_before: float, now: float) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET status = 'interrupted', job = json_set(job, '$.status', 'interrupted',"
                " '$.ended_at', ?, '$.error', 'its gateway stopped while it ran')"
                " WHERE status = 'running' AND updated_at < ?",
                (now, stale_before),
            )
            return cursor.rowcount

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def delete_expired(self, now: float, limit: int) -> int:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT process_id FROM processes WHERE expires_at <= ? LIMIT ?", (now, limit)
            )
            ids = [(r[0],) for r in rows]
            await db.executemany("DELETE FROM history WHERE process_id = ?", ids)
            await db.executemany("DELETE FROM fanouts WHERE process_id = ?", ids)
            await db.executemany("DELETE FROM fan_items WHERE process_id = ?", ids)
            await db.executemany("DELETE FROM processes WHERE process_id = ?", ids)
            await db.execute("DELETE FROM isolated_runs WHERE updated_at < ?", (now - 86400,))
            return len(ids)

    async def count_isolated_run(self, key: str, now: float) -> int:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "INSERT INTO isolated_runs (key, runs, updated_at) VALUES (?, 1, ?) ON CONFLICT (key)"
                " DO UPDATE SET runs = runs + 1, updated_at = excluded.updated_at RETURNING runs",
                (key, now),
            )
            return int(list(rows)[0][0])

    async def forget_isolated_runs(self, key: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM isolated_runs WHERE key = ?", (key,))

    async def commit_fan_out(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        state = fan_out.initial_state()
        async with self._transaction() as db:
            if not await self._commit_in(db, doc, entry, expected_version=expected_version, due_at=due_at,
                                         expires_at=None):
                return False
            await db.execute(
                "INSERT INTO fanouts (process_id, grp, total, win, tolerate, first, next_index, done, failed, decided)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                (doc.process_id, state.group, state.total, state.window, state.tolerate, state.first,
                 state.next_index, state.decided),
            )
            await db.executemany(
                "INSERT INTO fan_items (process_id, grp, idx, status, spec, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(doc.process_id, state.group, i, "dispatched" if i < state.next_index else "pending", spec,
                  doc.updated_at) for i, spec in enumerate(fan_out.specs)],
            )
            return True

    async def complete_item(
        self, process_id: str, group: int, index: int, *, ok: bool, result: Any, error: str | None, now: float
    ) -> ItemCompletion | None:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(_FAN_STATE, (process_id, group))
            items = await db.execute_fetchall(
                "SELECT status, released FROM fan_items WHERE process_id = ? AND grp = ? AND idx = ?",
                (process_id, group, index),
            )
            if not rows or not items:
                return None
            state = _fan_state(list(rows)[0])
            status, released = list(items)[0]
            if status != "dispatched":  # a duplicate: hand back what its first completion released
                found = [] if released is None else await db.execute_fetchall(
                    _FAN_ITEMS + " AND idx = ? AND status = 'dispatched'", (process_id, group, released))
                return ItemCompletion(False, state, _item_row(list(found)[0]) if found else None, False)
            new, release = complete(state, ok)
            await db.execute(
                "UPDATE fan_items SET status = ?, result = ?, error = ?, released = ?, updated_at = ?"
                " WHERE process_id = ? AND grp = ? AND idx = ?",
                ("done" if ok else "failed", orjson.dumps(result).decode() if ok else None, error, release, now,
                 process_id, group, index),
            )
            await db.execute(
                "UPDATE fanouts SET next_index = ?, done = ?, failed = ?, decided = ? WHERE process_id = ? AND grp = ?",
                (new.next_index, new.done, new.failed, new.decided, process_id, group),
            )
            released_row = None
            if release is not None:
                await db.execute(
                    "UPDATE fan_items SET status = 'dispatched', updated_at = ? WHERE process_id = ? AND grp = ?"
                    " AND idx = ?", (now, process_id, group, release),
                )
                found = await db.execute_fetchall(_FAN_ITEMS + " AND idx = ?", (process_id, group, release))
                released_row = _item_row(list(found)[0])
        return ItemCompletion(True, new, released_row, new.decided is not None and state.decided is None)

    async def fan_out_state(self, process_id: str, group: int) -> FanOutState | None:
        rows = await self._fetch(_FAN_STATE, (process_id, group))
        return _fan_state(rows[0]) if rows else None

    async def fan_out_items(
        self, process_id: str, group: int, *, status: str | None = None, after: int = -1, limit: int | None = None,
        updated_before: float | None = None,
    ) -> list[ItemRow]:
        rows = await self._fetch(
            _FAN_ITEMS + " AND idx > ? AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR updated_at < ?5)"
            " ORDER BY idx LIMIT ?6",
            (process_id, group, after, status, updated_before, -1 if limit is None else limit),
        )
        return [_item_row(r) for r in rows]
    async def sync_schedule(self, name: str, definition: str, timing: str, next_fire_at: float, now: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO schedules (name, definition, timing, next_fire_at, paused, updated_at)"
                " VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (name) DO UPDATE SET"
                " definition = excluded.definition, timing = excluded.timing, updated_at = excluded.updated_at,"
                " next_fire_at = CASE WHEN schedules.timing = excluded.timing THEN schedules.next_fire_at"
                " ELSE excluded.next_fire_at END WHERE schedules.definition <> excluded.definition",
                (name, definition, timing, next_fire_at, now),
            )

    async def due_schedules(self, names: list[str], now: float) -> list[ScheduleRow]:
        rows = await self._fetch(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name IN (SELECT value FROM json_each(?))"
            " AND NOT paused AND next_fire_at <= ? ORDER BY next_fire_at",
            (orjson.dumps(names).decode(), now),
        )
        return [_schedule_row(r) for r in rows]

    async def advance_schedule(
        self, name: str, *, expected_next_fire_at: float, next_fire_at: float, last_tick: float, fired_at: float
    ) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE schedules SET next_fire_at = ?, last_tick = ?, last_fired_at = ?, updated_at = ?"
                " WHERE name = ? AND next_fire_at = ?",
                (next_fire_at, last_tick, fired_at, fired_at, name, expected_next_fire_at),
            )
            return cursor.rowcount == 1

    async def schedules(self) -> list[ScheduleRow]:
        rows = await self._fetch(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name", ())
        return [_schedule_row(r) for r in rows]

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_fire_at: float | None = None
    ) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE schedules SET paused = ?, next_fire_at = coalesce(?, next_fire_at), updated_at = ?"
                " WHERE name = ?",
                (int(paused), next_fire_at, now, name),
            )
            return cursor.rowcount == 1

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._db is None:
            raise StoreError("the SQLite store is not open", hint="call `await store.open()` first")
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))


_FAN_STATE = (
    "SELECT grp, total, win, tolerate, first, next_index, done, failed, decided FROM fanouts"
    " WHERE process_id = ? AND grp = ?"
)
_FAN_ITEMS = "SELECT idx, status, spec, result, error, updated_at FROM fan_items WHERE process_id = ? AND grp = ?"


def _fan_state(row: Any) -> FanOutState:
    grp, total, win, tolerate, first, next_index, done, failed, decided = row
    return FanOutState(grp, total, win, tolerate, bool(first), next_index, done, failed, decided)


def _item_row(row: Any) -> ItemRow:
    idx, status, spec, result, error, updated_at = row
    return ItemRow(idx, status, orjson.loads(spec), _json(result), error, updated_at)
_SCHEDULE_COLUMNS = "name, definition, timing, next_fire_at, paused, last_tick, last_fired_at, updated_at"


def _schedule_row(r: Any) -> ScheduleRow:
    return ScheduleRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7])


def _conditions(where: ProcessFilter) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if where.case is not None:
        conditions.append("case_name = ?")
        params.append(where.case)
    if where.status == RETRYING:
        conditions.append(
            "status = 'waiting' AND (json_extract(doc, '$.waiting.kind') = 'resend' OR"
            " (json_extract(doc, '$.waiting.kind') = 'timer' AND json_extract(doc, '$.waiting.reason') = 'retry'))"
        )
    elif where.status is not None:
        conditions.append("status = ?")
        params.append(where.status)
    if where.failed_stage is not None:
        conditions.append("json_extract(doc, '$.error.stage') = ?")
        params.append(where.failed_stage)
    if where.created_after is not None:
        conditions.append("created_at >= ?")
        params.append(where.created_after)
    if where.created_before is not None:
        conditions.append("created_at < ?")
        params.append(where.created_before)
    return conditions, params


def _json(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)
