"""The store contract (``tests/store_contract*.py``) on every backend: SQLite in a file of its own, and the
real PostgreSQL in a schema of its own, dropped afterwards. A new backend adds itself to ``BACKENDS``.

Also here: what only a SQL database has, an older schema upgraded in place by ``open()``."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from framework.document import Status
from framework.store.postgres import PostgresStore
from framework.store.protocols import ProcessStore
from framework.store.records import RETRYING, ProcessFilter
from framework.store.sqlite import SqliteStore
from tests.store_contract import *  # noqa: F403 - the contract's tests run here, once per backend
from tests.store_contract import RETRY_WAIT, T0, doc_of, entry_of, summary_of
from tests.store_contract_queries import *  # noqa: F403
from tests.store_contract_workflows import *  # noqa: F403
from tests.support.servers import STORE_URL

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("servers_reachable")
    return request.param


@pytest.fixture
def location(backend: str, tmp_path: Path) -> str:
    """Where the backend keeps this test's data: a SQLite file, or a PostgreSQL schema."""
    return str(tmp_path / "contract.db") if backend == "sqlite" else f"c_{uuid.uuid4().hex[:10]}"


def store_at(backend: str, location: str) -> ProcessStore:
    if backend == "sqlite":
        return SqliteStore(location)
    return PostgresStore(STORE_URL, schema=location, min_size=1, max_size=4)


@pytest.fixture
async def store(backend: str, location: str) -> AsyncIterator[ProcessStore]:
    try:
        async with store_at(backend, location) as opened:
            yield opened
    finally:
        if backend == "postgres":
            conn = await asyncpg.connect(STORE_URL)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {location} CASCADE")
            finally:
                await conn.close()


async def _raw_sql(backend: str, location: str, *statements: str) -> None:
    if backend == "sqlite":
        with sqlite3.connect(location) as db:
            for sql in statements:
                db.execute(sql)
        return
    conn = await asyncpg.connect(STORE_URL)
    try:
        await conn.execute(f"SET search_path = {location}")
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def test_open_upgrades_an_older_schema_and_fills_the_derived_columns(
    store: ProcessStore, backend: str, location: str
) -> None:
    retrying = doc_of("r1", status=Status.WAITING, waiting=RETRY_WAIT)
    await store.create(retrying, entry_of(1), due_at=None)
    await store.create(doc_of("done", status=Status.COMPLETED), entry_of(1), due_at=None)
    await store.close()
    # the schema before the derived columns: no retrying, waiting_summary or ended_at (and no index on them)
    await _raw_sql(backend, location, "DROP INDEX processes_retrying_created", "DROP INDEX processes_ended",
                   "ALTER TABLE processes DROP COLUMN retrying", "ALTER TABLE processes DROP COLUMN waiting_summary",
                   "ALTER TABLE processes DROP COLUMN ended_at")

    await store.open()
    assert await store.find_ids(ProcessFilter(status=RETRYING)) == ["r1"]
    items, _ = await store.list_page(ProcessFilter())
    assert {i["process_id"]: i["waiting"] for i in items} == {
        "done": None, "r1": summary_of(RETRY_WAIT)}
    assert await store.finished_per_minute(0) == [("order", "completed", int(T0 // 60), 1)]  # ended at its update
    again = store_at(backend, location)
    async with again:  # opening an up-to-date schema changes nothing
        assert await again.find_ids(ProcessFilter(status=RETRYING)) == ["r1"]
        assert await again.count_matching(ProcessFilter(), timeout_s=5) == 2
