"""The schedule part of the store contract, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from framework import Settings
from framework.store.base import ProcessStore
from framework.store.postgres import PostgresStore
from framework.store.sqlite import SqliteStore
from tests.conftest import STORE_URL

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> AsyncIterator[ProcessStore]:
    if request.param == "sqlite":
        opened: ProcessStore = SqliteStore(str(tmp_path / "s.db"))
    else:  # in the test's own schema, dropped afterwards
        opened = PostgresStore(STORE_URL, schema=settings.store_schema, min_size=1, max_size=4)
    async with opened:
        yield opened


async def test_sync_due_advance_pause(store: ProcessStore) -> None:
    await store.sync_schedule("a", '{"v":1}', '{"every_s":60}', 120.0, now=100.0)
    await store.sync_schedule("b", '{"v":1}', '{"every_s":60}', 120.0, now=100.0)
    assert [r.name for r in await store.due_schedules(["a", "b"], 119.0)] == []
    assert [r.name for r in await store.due_schedules(["a"], 120.0)] == ["a"]  # only the names asked for

    # a new definition with the same timing keeps next_fire_at; a new timing resets it; the pause stays
    assert await store.advance_schedule("a", expected_next_fire_at=120.0, next_fire_at=180.0, last_tick=120.0,
                                        fired_at=121.0)
    assert await store.set_schedule_paused("a", True, now=122.0)
    await store.sync_schedule("a", '{"v":2}', '{"every_s":60}', 999.0, now=130.0)
    row = {r.name: r for r in await store.schedules()}["a"]
    assert (row.definition, row.next_fire_at, row.paused, row.last_tick) == ('{"v":2}', 180.0, True, 120.0)
    await store.sync_schedule("a", '{"v":3}', '{"every_s":30}', 150.0, now=131.0)
    row = {r.name: r for r in await store.schedules()}["a"]
    assert (row.timing, row.next_fire_at, row.paused) == ('{"every_s":30}', 150.0, True)
    assert await store.due_schedules(["a"], 1000.0) == []  # paused
    assert await store.set_schedule_paused("a", False, now=200.0, next_fire_at=210.0)
    assert [r.next_fire_at for r in await store.due_schedules(["a"], 1000.0)] == [210.0]
    assert not await store.set_schedule_paused("nope", True, now=200.0)


async def test_one_of_many_racing_advances_wins(store: ProcessStore) -> None:
    await store.sync_schedule("a", "{}", '{"every_s":1}', 10.0, now=9.0)
    results = await asyncio.gather(*(
        store.advance_schedule("a", expected_next_fire_at=10.0, next_fire_at=11.0, last_tick=10.0, fired_at=10.5)
        for _ in range(8)
    ))
    assert sorted(results) == [False] * 7 + [True]
