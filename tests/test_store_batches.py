"""Concurrent starts on PostgreSQL go in one statement (like commits), and batching changes no outcome:
every process is created once with its first history row, one client key still makes one process, and a
document PostgreSQL refuses fails only its own start."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from framework import Settings, Stageflow
from framework.errors import ProcessConflictError
from tests.support.cases import CASES, Jumper

pytestmark = pytest.mark.integration


async def test_concurrent_starts_are_each_created_once_with_their_history(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        plain = [flow.engine.start_process(Jumper, {"word": f"w{i}"}) for i in range(30)]
        keyed = [flow.engine.start_process(Jumper, {"word": "same"}, client_key="k-same") for _ in range(5)]
        results = await asyncio.gather(*plain, *keyed)

        assert all(created for _, created in results[:30])
        keyed_ids = {doc.process_id for doc, _ in results[30:]}
        assert len(keyed_ids) == 1, "one client key made more than one process"
        assert sum(created for _, created in results[30:]) == 1
        with pytest.raises(ProcessConflictError):
            await flow.engine.start_process(Jumper, {"word": "other"}, client_key="k-same")

    rows = await pg.fetch(
        f"SELECT p.process_id, p.version, count(h.*) AS entries, min(h.version) AS first"
        f" FROM {settings.store_schema}.processes p JOIN {settings.store_schema}.history h USING (process_id)"
        f" GROUP BY p.process_id, p.version"
    )
    assert len(rows) == 31
    assert all(r["entries"] == 1 and r["first"] == 1 for r in rows if r["version"] == 1)


async def test_a_document_postgresql_refuses_fails_only_its_own_start(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        starts = [flow.engine.start_process(Jumper, {"word": f"ok{i}"}) for i in range(10)]
        refused = flow.engine.start_process(Jumper, {"word": "nul\x00"})  # jsonb has no \u0000
        *fine, bad = await asyncio.gather(*starts, refused, return_exceptions=True)

    assert isinstance(bad, asyncpg.PostgresError), bad
    assert all(isinstance(result, tuple) and result[1] for result in fine), fine
    words = await pg.fetch(f"SELECT doc->'input'->>'word' AS word FROM {settings.store_schema}.processes")
    assert sorted(r["word"] for r in words) == sorted(f"ok{i}" for i in range(10))
