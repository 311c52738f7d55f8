"""A process started on an old case version finishes on it after a newer version is deployed.

The registry keeps several versions for exactly this (blue-green deploys): the message's stage is
checked against the document's own ``case_version``, so a stage that the new version renamed or removed
still runs for processes that started on the old one. Embedded (in-memory broker, SQLite): no server.
"""

from __future__ import annotations

from framework import BusinessCase, Engine, StageContext, Status, TaskIdSigner, stage
from framework.broker.memory import MemoryBroker
from framework.messages import RunStage
from framework.store.sqlite import SqliteStore


class RenamedV1(BusinessCase):
    name = "renamed"
    version = 1

    @stage
    async def first(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def old_name(self, ctx: StageContext) -> None:
        ctx.complete("finished on v1")


class RenamedV2(BusinessCase):
    name = "renamed"
    version = 2

    @stage
    async def first(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def new_name(self, ctx: StageContext) -> None:
        ctx.complete("finished on v2")


async def test_old_version_process_finishes_after_its_stage_is_renamed() -> None:
    store = SqliteStore(":memory:")
    broker = MemoryBroker()
    signer = TaskIdSigner(["case-versions-test-key-0123456789"])
    async with store:
        before_deploy = Engine(cases=[RenamedV1], store=store, broker=broker, signer=signer)
        doc = await before_deploy.start("renamed")
        await before_deploy.apply(RunStage(doc.process_id, "renamed", "first", 1))
        assert (await store.load(doc.process_id)).stage == "old_name"  # type: ignore[union-attr]

        after_deploy = Engine(cases=[RenamedV1, RenamedV2], store=store, broker=broker, signer=signer)
        await after_deploy.apply(RunStage(doc.process_id, "renamed", "old_name", 2))

        done = await store.load(doc.process_id)
        assert done is not None and done.status is Status.COMPLETED
        assert done.result == "finished on v1"
