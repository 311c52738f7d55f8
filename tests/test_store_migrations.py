"""Versioned, forward-only schema migrations, on SQLite and the real PostgreSQL.

A store made by the previous release (``tests/fixtures/schema_70ead12.py``: its exact DDL, and its statements
in ``statements_70ead12.py``) is filled with processes in several states through the old statements, then
opened by this release: every process still reads, lists and advances, the deploy columns are filled, the
old release's statements keep working on the upgraded store, and workers starting together (real
subprocesses) apply each migration exactly once. A store newer than the code is refused and left unchanged.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import orjson
import pytest

from framework.document import ProcessDocument, Status
from framework.errors import SchemaVersionError
from framework.state import EventWait, Failure, FanOutWait, ServiceWait
from framework.store.derived import derived_columns
from framework.store.postgres import PostgresStore
from framework.store.protocols import ProcessStore
from framework.store.records import RETRYING, LiveGroup, ProcessFilter
from framework.store.sql.dialect import POSTGRESQL, SQLITE, Dialect
from framework.store.sql.migrate import RECOGNISED, migrate
from framework.store.sql.schema import MIGRATIONS
from framework.store.sqlite import SqliteStore
from tests.store_contract import RETRY_WAIT, T0, TIMER_WAIT, doc_of, entry_of, next_of, summary_of
from tests.support.servers import STORE_URL

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
NEWEST = MIGRATIONS[-1].version
ALL = tuple(range(1, NEWEST + 1))


def _fixture(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD_SCHEMA, OLD_STATEMENTS = _fixture("schema_70ead12"), _fixture("statements_70ead12")

SERVICE = ServiceWait(api="billing", task_id="t", resume="charge", from_stage="reserve", since=T0)
EVENT = EventWait(name="paid", resume="ship", from_stage="pay", since=T0, deadline=T0 + 60)
FAN = FanOutWait(group=2, resume="join", from_stage="quote", total=3, since=T0)
# the previous release's processes, in every state a live or finished process can be in
OLD_PROCESSES = [
    doc_of("p-run", stage="reserve"),
    doc_of("p-call", status=Status.WAITING, stage="reserve", waiting=SERVICE),
    doc_of("p-retry", status=Status.WAITING, waiting=RETRY_WAIT, attempts=1),
    doc_of("p-timer", status=Status.WAITING, waiting=TIMER_WAIT),
    doc_of("p-event", status=Status.WAITING, stage="pay", waiting=EVENT, case_version=2),
    doc_of("p-fan", case="price_check", status=Status.WAITING, stage="quote", waiting=FAN),
    doc_of("p-done", status=Status.COMPLETED, stage="done", result={"ok": True}, ended_at=T0 + 5),
    doc_of("p-failed", status=Status.FAILED, ended_at=T0 + 6,
           error=Failure(stage="charge", reason="boom", at=T0 + 6, version=1)),
]
EXPECTED_REACH = [
    LiveGroup("order", 1, 1, reach="charge reserve"), LiveGroup("order", 1, 1, reach="reserve"),
    LiveGroup("order", 1, 1, reach="s1"), LiveGroup("order", 1, 1, reach="s1 s2"),
    LiveGroup("order", 2, 1, reach="pay ship"), LiveGroup("price_check", 1, 1, reach="join quote"),
]


class _Sql:
    """A test's own connection to the store's database: raw statements, as the previous release ran them."""

    def __init__(self, backend: str, location: str) -> None:
        self.backend, self.location = backend, location
        self.dialect: Dialect = SQLITE if backend == "sqlite" else POSTGRESQL
        self.prefix = "" if backend == "sqlite" else f"{location}."

    async def run(self, *statements: tuple[str, Sequence[Any]] | str) -> list[list[Any]]:
        """Each statement (with its parameters), in order; the rows of the last."""
        calls = [(s, ()) if isinstance(s, str) else s for s in statements]
        if self.backend == "sqlite":
            with sqlite3.connect(self.location) as db:
                rows: list[Any] = [db.execute(sql, params).fetchall() for sql, params in calls][-1]
            return [list(r) for r in rows]
        conn = await asyncpg.connect(STORE_URL)
        try:
            for sql, params in calls:
                rows = await conn.fetch(sql, *params)
        finally:
            await conn.close()
        return [list(r) for r in rows]

    async def old_release_schema(self) -> None:
        """The previous release's ``create_schema``, run as it ran (its scripts in one go)."""
        await self._old(lambda db: OLD_SCHEMA.create_schema(db, self.dialect, schema=self._schema))

    @property
    def _schema(self) -> str | None:
        return None if self.backend == "sqlite" else self.location

    async def _old(self, work: Any) -> None:
        if self.backend == "sqlite":
            db = sqlite3.connect(self.location)
            try:
                await work(_OldSqlite(db))
                db.commit()
            finally:
                db.close()
            return
        conn = await asyncpg.connect(STORE_URL)
        try:
            await work(_OldPostgres(conn))
        finally:
            await conn.close()

    def old_create(self, doc: ProcessDocument) -> list[tuple[str, Sequence[Any]]]:
        """The previous release's create: its 13 columns (the derived ones as it derived them) and history."""
        sql, p = OLD_STATEMENTS.Statements(self.dialect, self._schema), self.prefix
        retrying, waiting, search, ended_at = derived_columns(doc)[:4]
        row = (doc.process_id, doc.case, doc.client_key, doc.status.value, doc.version, doc.to_json().decode(), None,
               doc.created_at, orjson.dumps(entry_of(1)).decode(), retrying, waiting, search, ended_at)
        if self.backend == "postgres":  # its one statement (70ead12's postgres.py)
            return [(f"""
                WITH ins AS (
                    INSERT INTO {p}processes ({OLD_STATEMENTS.CREATE_COLUMNS}) VALUES ({OLD_STATEMENTS.CREATE_VALUES})
                    ON CONFLICT DO NOTHING
                    RETURNING process_id, version)
                INSERT INTO {p}history (process_id, version, entry)
                SELECT process_id, version, $9::jsonb FROM ins""", row)]
        return [(sql.insert, row), (sql.insert_history, (doc.process_id, doc.version, row[8]))]

    def old_commit(self, doc: ProcessDocument) -> tuple[str, Sequence[Any]]:
        """The previous release's commit of ``doc`` (at its version, from the one before); in SQLite without
        its history row (a second statement)."""
        retrying, waiting, search, ended_at = derived_columns(doc)[:4]
        row = (doc.process_id, doc.version - 1, doc.to_json().decode(), doc.status.value, None, doc.updated_at,
               orjson.dumps(entry_of(doc.version)).decode(), None, retrying, waiting, search, ended_at)
        if self.backend == "postgres":
            p = self.prefix
            return f"""
                WITH upd AS (
                    UPDATE {p}processes SET {OLD_STATEMENTS.COMMIT_SET} WHERE process_id = $1 AND version = $2
                    RETURNING process_id)
                INSERT INTO {p}history (process_id, version, entry)
                SELECT process_id, $2 + 1, $7::jsonb FROM upd""", row
        return OLD_STATEMENTS.Statements(self.dialect, self._schema).update, row


class _OldSqlite:
    """The old ``Executor`` over sqlite3: its ``script`` ran several statements at once."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def script(self, sql: str) -> None:
        self.db.executescript(sql)

    async def column_names(self, schema: str | None, table: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM pragma_table_info(?)", (table,))}


class _OldPostgres:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def script(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def column_names(self, schema: str | None, table: str) -> set[str]:
        rows = await self.conn.fetch("SELECT column_name FROM information_schema.columns"
                                     " WHERE table_schema = $1 AND table_name = $2", schema, table)
        return {r[0] for r in rows}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("servers_reachable")
    return str(request.param)


@pytest.fixture
async def raw(backend: str, tmp_path: Path) -> AsyncIterator[_Sql]:
    location = str(tmp_path / "old.db") if backend == "sqlite" else f"m_{uuid.uuid4().hex[:10]}"
    yield _Sql(backend, location)
    if backend == "postgres":
        conn = await asyncpg.connect(STORE_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {location} CASCADE")
        finally:
            await conn.close()


def store_of(raw: _Sql) -> SqliteStore | PostgresStore:
    if raw.backend == "sqlite":
        return SqliteStore(raw.location)
    return PostgresStore(STORE_URL, schema=raw.location, min_size=1, max_size=4)


async def _previous_release_store(raw: _Sql) -> None:
    await raw.old_release_schema()
    await raw.run(*[call for doc in OLD_PROCESSES for call in raw.old_create(doc)])


async def test_a_store_of_the_previous_release_upgrades_and_every_process_reads_lists_and_advances(
    raw: _Sql,
) -> None:
    await _previous_release_store(raw)
    async with store_of(raw) as store:
        assert store.applied_migrations == ALL  # 1-4 recognised from its columns, then 5 and 6 applied
        recorded = await raw.run(f"SELECT version, description FROM {raw.prefix}schema_migrations ORDER BY version")
        assert [(v, d.endswith(RECOGNISED)) for v, d in recorded] == [(v, v <= 4) for v in ALL]
        for doc in OLD_PROCESSES:
            assert await store.load(doc.process_id) == doc
        items, _ = await store.list_page(ProcessFilter())
        assert {i["process_id"]: (i["status"], i["stage"], i["waiting"]) for i in items} == {
            d.process_id: (d.status.value, d.stage, d.waiting and summary_of(d.waiting)) for d in OLD_PROCESSES}
        assert await store.find_ids(ProcessFilter(status=RETRYING)) == ["p-retry"]
        assert await store.live_reach() == EXPECTED_REACH
        assert sorted(await store.finished_per_minute(0)) == [("order", "completed", int((T0 + 5) // 60), 1),
                                                              ("order", "failed", int((T0 + 6) // 60), 1)]
        for doc in OLD_PROCESSES:  # every live one advances, through this release's commit
            if not doc.status.finished:
                moved = next_of(doc, status=Status.RUNNING, stage="after", waiting=None)
                assert await store.commit(moved, entry_of(2), expected_version=1, due_at=None, expires_at=None)
                assert (await store.load_with_history(doc.process_id) or (None, []))[1] == [entry_of(1), entry_of(2)]
        assert await store.live_reach() == [LiveGroup("order", 1, 4, reach="after"),
                                            LiveGroup("order", 2, 1, reach="after"),
                                            LiveGroup("price_check", 1, 1, reach="after")]
    async with store_of(raw) as again:  # up to date: nothing to apply
        assert again.applied_migrations == ()


async def test_the_previous_release_keeps_working_on_the_upgraded_store_and_deploy_queries_read_its_rows(
    raw: _Sql,
) -> None:
    await _previous_release_store(raw)
    async with store_of(raw) as store:
        # a worker of the previous release, still running during the deploy, commits and creates
        moved = next_of(OLD_PROCESSES[0], stage="ship")
        await raw.run(raw.old_commit(moved), *raw.old_create(doc_of("p-new", case="refund", stage="start")))
        assert await store.load(moved.process_id) == moved
        assert await store.load("p-new") == doc_of("p-new", case="refund", stage="start")
        # their deploy columns are stale or missing: the queries read those documents
        assert [(g.case, g.reach) for g in await store.live_reach() if g.reach in ("ship", "start")] == [
            ("order", "ship"), ("refund", "start")]
        assert LiveGroup("order", 1, 1, stage="ship") in await store.live_stages()
        assert await store.commit(next_of(moved, stage="pack"), entry_of(3), expected_version=2, due_at=None,
                                  expires_at=None)
        assert LiveGroup("order", 1, 1, reach="pack") in await store.live_reach()


async def test_a_store_from_before_the_derived_columns_is_recognised_and_backfilled(raw: _Sql) -> None:
    """Was the in-place upgrade test of ``test_store_contract``: a release with migration 1's tables only (and
    not even the jobs table, which came later), from before any record of migrations."""
    await _only_first_migration(raw)
    columns = ("process_id, case_name, client_key, status, version, doc, due_at, expires_at, created_at,"
               " updated_at")
    rows = [doc_of("r1", status=Status.WAITING, waiting=RETRY_WAIT),
            doc_of("done", status=Status.COMPLETED, ended_at=T0 + 3, updated_at=T0 + 3)]
    await raw.run(*[(raw.dialect.sql(f"INSERT INTO {raw.prefix}processes ({columns}) VALUES"
                                     " ($1, $2, NULL, $3, 1, $4, NULL, NULL, $5, $6)"),
                     (d.process_id, d.case, d.status.value, d.to_json().decode(), d.created_at, d.updated_at))
                    for d in rows])
    async with store_of(raw) as store:
        assert store.applied_migrations == ALL  # 1 recognised (its jobs table made again), the rest applied
        assert await store.find_ids(ProcessFilter(status=RETRYING)) == ["r1"]
        items, _ = await store.list_page(ProcessFilter())
        assert {i["process_id"]: i["waiting"] for i in items} == {"done": None, "r1": summary_of(RETRY_WAIT)}
        assert await store.finished_per_minute(0) == [("order", "completed", int((T0 + 3) // 60), 1)]  # its update
        assert await store.live_reach() == [LiveGroup("order", 1, 1, reach="s1")]
        assert await store.list_jobs(limit=5) == []


async def _only_first_migration(raw: _Sql) -> None:
    """Migration 1 alone, unrecorded: a store of a release from before the derived columns."""
    schema = None if raw.backend == "sqlite" else raw.location
    if raw.backend == "sqlite":
        import aiosqlite

        from framework.store.sql.executor import SqliteExecutor

        async with aiosqlite.connect(raw.location, isolation_level=None) as db:
            await migrate(SqliteExecutor(db), SQLITE, schema=schema, migrations=MIGRATIONS[:1])
    else:
        from framework.store.sql.executor import PgExecutor

        conn = await asyncpg.connect(STORE_URL)
        try:
            await migrate(PgExecutor(conn), POSTGRESQL, schema=schema, migrations=MIGRATIONS[:1])
        finally:
            await conn.close()
    await raw.run(f"DROP TABLE {raw.prefix}schema_migrations", f"DROP TABLE IF EXISTS {raw.prefix}jobs")


# A worker's start, as far as the store goes: open it (at the same instant as the others), say what it applied.
_OPEN = """
import asyncio, json, sys, time
from tests.test_store_migrations import _store_at
async def main():
    store = _store_at(sys.argv[1], sys.argv[2])
    await asyncio.sleep(float(sys.argv[3]) - time.time())
    async with store:
        print(json.dumps(store.applied_migrations))
asyncio.run(main())
"""


def _store_at(backend: str, location: str) -> ProcessStore:
    return store_of(_Sql(backend, location))


async def test_workers_starting_together_on_a_live_store_apply_each_migration_once(raw: _Sql) -> None:
    await _previous_release_store(raw)
    extra = [doc_of(f"x-{n:05}", status=Status.WAITING, waiting=TIMER_WAIT) for n in range(3000)]  # a longer backfill
    await raw.run(*[call for doc in extra for call in raw.old_create(doc)])
    at = str(time.time() + 4)  # past every child's imports
    starts = [await asyncio.create_subprocess_exec(sys.executable, "-c", _OPEN, raw.backend, raw.location, at,
                                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(4)]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in starts)), 60)
    assert [p.returncode for p in starts] == [0] * 4, [err.decode()[-2000:] for _, err in results]
    applied = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in results]
    assert sorted(v for one in applied for v in one) == list(ALL), applied  # each once, by one of them
    assert sorted(applied, key=len) == [[], [], [], list(ALL)]  # the first did all: the others found them done
    recorded = await raw.run(f"SELECT version FROM {raw.prefix}schema_migrations ORDER BY version")
    assert [r[0] for r in recorded] == list(ALL)
    async with store_of(raw) as store:
        assert await store.live_reach() == [
            *EXPECTED_REACH[:3], LiveGroup("order", 1, 3001, reach="s1 s2"), *EXPECTED_REACH[4:]]


async def test_a_store_newer_than_the_code_is_refused_with_a_hint_and_left_unchanged(raw: _Sql) -> None:
    await _previous_release_store(raw)
    async with store_of(raw):
        pass
    table = f"{raw.prefix}schema_migrations"
    unknown = NEWEST + 1
    await raw.run(f"DELETE FROM {table} WHERE version > 4",  # at 4, with a migration of a newer release
                  (raw.dialect.sql(f"INSERT INTO {table} VALUES ($1, 'from the future', 0)"), (unknown,)))
    await raw.run(f"DROP TABLE {raw.prefix}workers")
    before = await raw.run(f"SELECT version, description FROM {table} ORDER BY version")
    store = store_of(raw)
    with pytest.raises(SchemaVersionError) as refused:
        await store.open()
    await store.close()
    assert f"schema migration {unknown}" in refused.value.message
    assert f"up to {NEWEST}" in refused.value.message
    assert refused.value.hint is not None and "newer release" in refused.value.message
    assert "restore" in refused.value.hint
    assert await raw.run(f"SELECT version, description FROM {table} ORDER BY version") == before
    # migration 6 was pending, and was not applied
    with pytest.raises((sqlite3.OperationalError, asyncpg.UndefinedTableError)):
        await raw.run(f"SELECT count(*) FROM {raw.prefix}workers")
