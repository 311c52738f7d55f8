"""Duplicated, redelivered and stale messages change nothing.

Each test injects messages straight into the real RabbitMQ queues (or hands them to the engine as a
redelivery) while an in-process worker and the ``effects`` service run on RabbitMQ + PostgreSQL. The
verdict comes from witnesses outside the framework: the ``ledger`` trigger (one row per UPDATE of a
process row), the ``effects`` table (one row per applied effect) and the ``history`` table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest

from framework import ProcessDocument, Settings, Stageflow, Status
from framework.broker.base import INNER, SERVICE, Broker, Consumer, Handler, Outgoing, command_queue
from framework.engine import Engine
from framework.inbound import Inbound
from framework.messages import RunStage, ServiceReplyMessage
from framework.service import Service
from framework.service.inbox import PostgresInbox
from framework.signing import MessageSigner
from framework.taskid import TaskRef
from framework.wiring import broker_from_settings
from framework.worker import Worker
from tests.conftest import TEST_SECRET
from tests.support import services as effects_module
from tests.support.cases import CASES, FiveCalls
from tests.support.cluster import services_db_url
from tests.support.ledger import (
    FIVE_CALLS_COMMITS,
    audit_five_calls,
    effect_counts,
    history_versions,
    install_ledger,
    ledger_commits,
    queue_depth,
    take_message,
    wait_all_finished,
)

pytestmark = pytest.mark.integration

WAIT_S = 60.0  # generous: another benchmark may share the machine


# -- the harness: flow, in-process worker, effects service, and taps on what the engine handles/publishes --


class Tap:
    """Counts the messages the engine has finished applying, so a test can wait for its injected ones."""

    def __init__(self, engine: Engine) -> None:
        self.handled: list[Inbound] = []
        self._parse = {"inner": engine.inbound.inner, "reply": engine.inbound.reply}
        original = engine.apply  # the worker looks engine.apply up on each message

        async def tapped(message: Inbound, *, redelivered: bool = False) -> None:
            try:
                await original(message, redelivered=redelivered)
            finally:
                self.handled.append(message)

        engine.apply = tapped  # type: ignore[method-assign]

    def count(self, kind: str, body: bytes) -> int:
        message = self._parse[kind](body)
        return sum(1 for m in self.handled if m == message)

    async def wait(self, kind: str, body: bytes, times: int, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(kind, body) < times:
            assert time.monotonic() < deadline, f"{kind} message handled {self.count(kind, body)}/{times} times"
            await asyncio.sleep(0.02)


class PublishSpy:
    """Records everything the flow's broker publishes (and still publishes it)."""

    def __init__(self, broker: Broker) -> None:
        self.published: list[Outgoing] = []
        original = broker.publish

        async def publish(messages: Sequence[Outgoing]) -> None:
            await original(messages)
            self.published.extend(messages)

        broker.publish = publish  # type: ignore[method-assign]


class Blackhole(Broker):
    """A broker that confirms every publish and delivers nothing: the worker "died" before publishing."""

    def __init__(self) -> None:
        self.swallowed: list[Outgoing] = []

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.swallowed.extend(messages)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        raise NotImplementedError


@dataclass
class Harness:
    flow: Stageflow
    settings: Settings
    pg: asyncpg.Connection
    worker: Worker
    effects: Service
    tap: Tap
    spy: PublishSpy
    _running: list[Any] = field(default_factory=list)

    @property
    def schema(self) -> str:
        return self.settings.store_schema

    async def start_worker(self) -> None:
        await self.worker.start()
        self._running.append(self.worker)

    async def start_effects(self) -> None:
        await self.effects.start()
        self._running.append(self.effects)

    async def publish(self, queue: str, body: bytes, copies: int, message_id: str = "injected") -> None:
        """Publish ``copies`` identical messages in one confirmed batch."""
        await self.flow.broker.publish([Outgoing(queue, message_id, body) for _ in range(copies)])

    async def doc(self, process_id: str) -> ProcessDocument:
        return await self.flow.get(process_id)

    async def wait_version(self, process_id: str, version: int, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while (await self.doc(process_id)).version < version:
            assert time.monotonic() < deadline, f"process {process_id} never reached version {version}"
            await asyncio.sleep(0.02)

    async def finish(self, process_ids: Sequence[str]) -> None:
        assert await wait_all_finished(self.pg, self.schema, len(process_ids), WAIT_S), "processes did not finish"

    async def snapshot(self, process_id: str) -> dict[str, Any]:
        """Everything the witnesses hold about one process, to compare before and after injections."""
        ledger = await self.pg.fetch(
            f"SELECT old_version, new_version, old_stage, new_status FROM {self.schema}.ledger"
            " WHERE process_id = $1 ORDER BY recorded_at", process_id,
        )
        return {
            "doc": (await self.doc(process_id)).to_json(),
            "ledger": [tuple(r) for r in ledger],
            "effects": await effect_counts(self.pg, self.schema, process_id),
            "history": await history_versions(self.pg, self.schema, process_id),
        }

    async def assert_exactly_once(self, process_ids: Sequence[str]) -> None:
        report = await audit_five_calls(self.pg, self.schema, process_ids)
        assert report.clean, (report.figures(), report.examples)
        assert report.stage_commits == 6 * len(process_ids) and report.effects == 5 * len(process_ids)
        for pid in process_ids:
            doc = await self.doc(pid)
            assert doc.status is Status.COMPLETED
            assert doc.result == {"n": doc.input["n"], "steps": 5}
            assert [doc.store[f"reply_{s}"] for s in range(1, 6)] == [{"step": s, "ok": True} for s in range(1, 6)]
            commits = await ledger_commits(self.pg, self.schema, pid)
            assert [(old, stage, status) for old, _new, stage, status in commits] == list(FIVE_CALLS_COMMITS)
        assert await queue_depth(self.settings.broker_url, f"{self.settings.queue_prefix}.parked") == 0


@pytest.fixture
async def harness(settings: Settings, pg: asyncpg.Connection) -> AsyncIterator[Harness]:
    async with Stageflow.from_settings(settings, cases=CASES, connection_name="duplicates-test") as flow:
        await install_ledger(pg, settings.store_schema)
        service_broker = broker_from_settings(settings, connection_name="duplicates-effects")
        inbox = PostgresInbox(services_db_url(settings), setup_sql=effects_module.SETUP_SQL)
        async with service_broker, inbox:  # the inbox creates the effects table now; consuming starts later
            h = Harness(
                # The relay stays off (it would re-publish outboxes on its own timer): every recovery
                # these tests see comes from the path under test, and snapshots stay comparable.
                flow=flow, settings=settings, pg=pg, worker=flow.worker(prefetch=64, timer_interval_s=3600.0),
                effects=Service("effects", effects_module.record_effect, broker=service_broker, inbox=inbox),
                tap=Tap(flow.engine), spy=PublishSpy(flow.broker),
            )
            try:
                yield h
            finally:
                for component in reversed(h._running):
                    await component.stop(timeout_s=10)


SIGNER = MessageSigner([TEST_SECRET])


def run_stage(pid: str, stage: str, transition: int) -> bytes:
    return SIGNER.sign(RunStage(pid, FiveCalls.name, stage, transition).to_json())  # signed like the engine's


# -- (a) the same RunStage five more times, all at once ---------------------------------------------------


async def test_same_run_stage_delivered_six_times_at_once_commits_once(harness: Harness) -> None:
    await harness.start_effects()
    docs = [await harness.flow.start(FiveCalls, {"n": n}) for n in range(10)]
    bodies = [run_stage(d.process_id, "step_1", 1) for d in docs]
    for doc, body in zip(docs, bodies, strict=True):  # the original is already queued: 6 copies in all
        await harness.publish(INNER, body, copies=5, message_id=f"{doc.process_id}/1/run")
    await harness.start_worker()  # 60 copies reach one worker with prefetch 64: they race each other
    for body in bodies:
        await harness.tap.wait("inner", body, 6)
    await harness.finish([d.process_id for d in docs])
    await harness.assert_exactly_once([d.process_id for d in docs])


# -- (b) stale and redelivered RunStage messages after the process moved on --------------------------------


async def test_stale_and_redelivered_run_stage_after_the_process_moved_on(harness: Harness) -> None:
    await harness.start_worker()  # no effects service yet: the process stops at version 2, waiting
    doc = await harness.flow.start(FiveCalls, {"n": 1})
    pid = doc.process_id
    await harness.wait_version(pid, 2)
    waiting = await harness.snapshot(pid)
    assert (await harness.doc(pid)).status is Status.WAITING

    stale = run_stage(pid, "step_1", 1)  # the transition that is already committed
    early = run_stage(pid, "step_2", 2)  # the current version, but the process waits for a reply, not this
    await harness.publish(INNER, stale, copies=3)
    await harness.publish(INNER, early, copies=2)
    await harness.tap.wait("inner", stale, 3)
    await harness.tap.wait("inner", early, 2)
    assert await harness.snapshot(pid) == waiting, "a stale or premature RunStage changed the process"

    # A redelivered stale message re-publishes the outbox (its worker may have died before publishing):
    # that makes a duplicate of the pending service command, which the service's inbox absorbs.
    harness.spy.published.clear()
    await harness.flow.engine.apply(harness.flow.engine.inbound.inner(stale), redelivered=True)
    [republished] = harness.spy.published
    assert (republished.queue, republished.message_id) == (command_queue("effects"), f"{pid}/2/call")
    assert await harness.snapshot(pid) == waiting

    await harness.start_effects()  # two copies of the step-1 command are queued now
    await harness.finish([pid])
    await harness.assert_exactly_once([pid])


# -- (c) a real service reply delivered three times --------------------------------------------------------


async def test_duplicated_service_reply_resumes_once(harness: Harness) -> None:
    await harness.start_effects()
    doc = await harness.flow.start(FiveCalls, {"n": 2})
    pid = doc.process_id
    prefix = harness.settings.queue_prefix
    # Play the worker by hand for the first stage, then catch the service's real reply before anyone uses it.
    first = await take_message(harness.settings.broker_url, f"{prefix}.inner")
    assert first.body == run_stage(pid, "step_1", 1)
    await harness.flow.engine.apply(harness.flow.engine.inbound.inner(first.body))
    reply = (await take_message(harness.settings.broker_url, f"{prefix}.service")).body
    parsed = ServiceReplyMessage.parse(reply)
    assert parsed.ok and parsed.data == {"step": 1, "ok": True}
    assert parsed.task_id == (await harness.doc(pid)).waiting.task_id

    await harness.publish(SERVICE, reply, copies=3, message_id=f"reply/{parsed.task_id[:200]}")
    await harness.start_worker()  # the three copies race in one worker
    await harness.tap.wait("reply", reply, 3)
    await harness.finish([pid])
    await harness.assert_exactly_once([pid])

    # A late error reply for the same waiting point must not fail the process that moved on.
    late_error = ServiceReplyMessage(parsed.task_id, ok=False, error="late failure").to_json()
    before = await harness.snapshot(pid)
    await harness.publish(SERVICE, late_error, copies=2)
    await harness.tap.wait("reply", late_error, 2)
    assert await harness.snapshot(pid) == before


# -- (d) every kind of message for a process that is already completed -------------------------------------


async def test_messages_for_a_completed_process_change_nothing(harness: Harness) -> None:
    await harness.start_effects()
    await harness.start_worker()
    doc = await harness.flow.start(FiveCalls, {"n": 3})
    pid = doc.process_id
    await harness.finish([pid])
    await harness.assert_exactly_once([pid])
    before = await harness.snapshot(pid)
    assert (await harness.doc(pid)).version == 7

    # Its one real RunStage (step_1), and RunStages for its last stage at the previous and the current
    # version, and for another stage at the current version.
    inner = [run_stage(pid, "step_1", 1), run_stage(pid, "done", 6), run_stage(pid, "done", 7),
             run_stage(pid, "step_3", 7)]
    # Every real reply the service recorded (read from its inbox), plus an error reply for the last call.
    rows = await harness.pg.fetch(f"SELECT task_id, reply FROM {harness.schema}.stageflow_inbox")
    signer = harness.flow.engine.signer
    replies = [r["reply"].encode() for r in rows if signer.verify(r["task_id"]).process_id == pid]
    assert len(replies) == 5
    last_task = signer.sign(TaskRef(pid, FiveCalls.name, "effects", "done", 6))
    assert last_task in {orjson.loads(r)["task_id"] for r in replies}
    replies.append(ServiceReplyMessage(last_task, ok=False, error="late failure").to_json())

    for body in inner:
        await harness.publish(INNER, body, copies=2)
    for body in replies:
        await harness.publish(SERVICE, body, copies=2)
    for body in inner:
        await harness.tap.wait("inner", body, 2)
    for body in replies:
        await harness.tap.wait("reply", body, 2)
    # ... and the same as redeliveries, which may re-publish an outbox: a completed process has none.
    harness.spy.published.clear()
    for body in inner:
        await harness.flow.engine.apply(harness.flow.engine.inbound.inner(body), redelivered=True)
    for body in replies:
        await harness.flow.engine.apply(harness.flow.engine.inbound.reply(body), redelivered=True)
    assert harness.spy.published == []

    assert await harness.snapshot(pid) == before
    assert await queue_depth(harness.settings.broker_url, f"{harness.settings.queue_prefix}.parked") == 0


# -- the recovery path: a worker that died after its commit, before publishing -----------------------------


async def test_redelivery_republishes_an_outbox_its_dead_worker_never_published(harness: Harness) -> None:
    """Each of the first two transitions is committed by an engine whose publishes vanish (the worker died
    right after the commit). The original message, redelivered, must re-publish the committed outbox;
    the relay cannot help here, as the dead engine set the relay an hour ahead."""
    flow = harness.flow
    blackhole = Blackhole()
    dead = Engine(cases=flow.engine.cases, store=flow.store, broker=blackhole, signer=flow.engine.signer,
                  relay_grace_s=3600.0)
    await harness.start_effects()  # the worker stays off until the end: the test delivers by hand

    doc = await dead.start(FiveCalls, {"n": 4})  # created; its first RunStage never reached RabbitMQ
    pid = doc.process_id
    body = run_stage(pid, "step_1", 1)
    await dead.apply(dead.inbound.inner(body))  # step_1 committed; the service command is lost with the worker
    committed = await harness.doc(pid)
    assert (committed.version, committed.status, len(committed.outbox)) == (2, Status.WAITING, 1)
    lost = blackhole.swallowed[-1]
    assert (lost.queue, lost.message_id) == (command_queue("effects"), f"{pid}/2/call")

    harness.spy.published.clear()
    await flow.engine.apply(flow.engine.inbound.inner(body))  # a fresh duplicate must not re-publish...
    assert harness.spy.published == []
    await flow.engine.apply(flow.engine.inbound.inner(body), redelivered=True)  # ...but the redelivered original does
    assert harness.spy.published == [lost]

    # The same for a service reply: take the real reply, let the dead engine commit it, then redeliver it.
    reply = (await take_message(harness.settings.broker_url, f"{harness.settings.queue_prefix}.service")).body
    await dead.apply(dead.inbound.reply(reply))  # step_2 committed; its command is lost
    assert (await harness.doc(pid)).version == 3
    lost = blackhole.swallowed[-1]
    assert (lost.queue, lost.message_id) == (command_queue("effects"), f"{pid}/3/call")
    harness.spy.published.clear()
    await flow.engine.apply(flow.engine.inbound.reply(reply))
    assert harness.spy.published == []
    await flow.engine.apply(flow.engine.inbound.reply(reply), redelivered=True)
    assert harness.spy.published == [lost]

    await harness.start_worker()  # the rest runs normally
    await harness.finish([pid])
    await harness.assert_exactly_once([pid])
