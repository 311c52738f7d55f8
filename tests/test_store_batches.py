"""Concurrent starts on PostgreSQL go in one statement (like commits), and batching changes no outcome:
every process is created once with its first history row, one client key still makes one process, and a
document PostgreSQL refuses (jsonb keeps no NUL character) fails only its own start, as a clear input
error; stage data it refuses fails that process with the reason, not the worker."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pydantic import BaseModel

from framework import BusinessCase, Settings, StageContext, Stageflow, Status, stage
from framework.errors import InvalidInputError, ProcessConflictError
from tests.support.cases import CASES, Jumper
from tests.support.cluster import wait_finished

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


async def test_input_postgresql_refuses_is_a_clear_input_error_and_fails_only_its_own_start(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        starts = [flow.engine.start_process(Jumper, {"word": f"ok{i}"}) for i in range(10)]
        refused = flow.engine.start_process(Jumper, {"word": "nul\x00"})  # jsonb has no \u0000
        *fine, bad = await asyncio.gather(*starts, refused, return_exceptions=True)

    assert isinstance(bad, InvalidInputError), bad
    assert "(input)" in str(bad.errors) and "cannot be stored" in str(bad), bad
    assert "PostgreSQL" not in str(bad) and "0x00" not in str(bad), bad  # a caller's answer: no driver text
    assert all(isinstance(result, tuple) and result[1] for result in fine), fine
    words = await pg.fetch(f"SELECT doc->'input'->>'word' AS word FROM {settings.store_schema}.processes")
    assert sorted(r["word"] for r in words) == sorted(f"ok{i}" for i in range(10))


class NulWriter(BusinessCase):
    """Its stage keeps a string PostgreSQL's jsonb cannot hold."""

    name = "nul_writer"
    version = 1

    class Input(BaseModel):
        pass

    @stage
    async def write(self, ctx: StageContext) -> None:
        ctx.store["text"] = "a\x00b"
        ctx.next()

    @stage
    async def never(self, ctx: StageContext) -> None:
        ctx.complete()


async def test_stage_data_postgresql_refuses_fails_the_process_with_the_reason(settings: Settings) -> None:
    async with Stageflow.from_settings(settings, cases=[*CASES, NulWriter]) as flow:
        worker = flow.worker()
        await worker.start()
        try:
            doc = await flow.start(NulWriter, {})
            (done,) = await wait_finished(flow, [doc.process_id], timeout_s=30)
        finally:
            await worker.stop()
    assert done.status is Status.FAILED
    assert "stage data cannot be stored" in str(done.error), done.error
    assert "PostgreSQL" not in str(done.error) and "0x00" not in str(done.error), done.error  # served by the API
