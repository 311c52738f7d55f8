"""The store contract (``tests/store_contract*.py``) on every backend: SQLite in a file of its own, and the
real PostgreSQL in a schema of its own, dropped afterwards. A new backend adds itself to ``BACKENDS``.

Upgrades of older schemas (numbered migrations) are in ``tests/test_store_migrations.py``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from framework.store.postgres import PostgresStore
from framework.store.protocols import ProcessStore
from framework.store.sqlite import SqliteStore
from tests.store_contract import *  # noqa: F403 - the contract's tests run here, once per backend
from tests.store_contract_deploy import *  # noqa: F403
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


def test_sql_parameter_numbers_match_the_rows_they_are_given() -> None:
    """The create's and commit's placeholders are the rows' positions, and the fan-out transition numbers its
    own after the commit's: a column added to one and not the other fails here, not in production."""
    import re

    from framework.fanout import NewFanOut
    from framework.store.pg_fanout import fan_out_statements
    from framework.store.sql.rows import commit_row, create_row
    from framework.store.sql.statements import COMMIT_SET, CREATE_VALUES
    from tests.store_contract import doc_of, entry_of

    def numbers(sql: str) -> set[int]:
        return {int(n) for n in re.findall(r"\$(\d+)", sql)}

    doc = doc_of("p")
    created, committed = create_row(doc, entry_of(1), None), commit_row(doc, entry_of(2), 1, None, None)
    assert numbers(CREATE_VALUES) | {9} == set(range(1, len(created) + 1))  # $9, the history entry, goes elsewhere
    assert numbers(COMMIT_SET) | {1, 7} == set(range(1, len(committed) + 1))  # $1 and $7: the WHERE and history
    fan_out, _ = fan_out_statements("")
    s = NewFanOut(2, ["{}"], window=1, tolerate=0, first=False).initial_state()
    fan_args = (s.group, s.total, s.window, s.tolerate, s.first, s.next_index, s.decided, ["{}"])  # as pg_fanout
    assert numbers(fan_out) == set(range(1, len(committed) + len(fan_args) + 1))
