"""Bad input on the queues (forged or altered taskIds, malformed messages) is parked with its reason,
changes nothing, and the worker keeps running. On real RabbitMQ + PostgreSQL with a worker subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from framework import Settings, Stageflow, Status, TaskIdSigner, TaskRef
from framework.broker.base import INNER, REASON_HEADER, SERVICE, SOURCE_HEADER, Outgoing
from framework.messages import RunStage, ServiceReplyMessage
from tests.conftest import BROKER_URL
from tests.support import processes
from tests.support.cases import CASES, Jumper
from tests.support.cluster import Cluster, wait_finished

pytestmark = pytest.mark.integration


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        yield flow


async def parked_messages(settings: Settings, expected: int, timeout_s: float = 20) -> list[dict]:
    """Read (and remove) parked messages until ``expected`` have arrived or time is up."""
    found: list[dict] = []
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{settings.queue_prefix}.parked", ensure=True)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            found.append({"body": message.body, **(message.headers or {})})
    return found


async def wait_for(flow: Stageflow, process_id: str, status: Status, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await flow.get(process_id)).status is not status:
        assert asyncio.get_running_loop().time() < deadline, f"process never reached {status}"
        await asyncio.sleep(0.1)


async def test_forged_and_altered_task_ids_are_parked_and_touch_nothing(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    cluster = Cluster(settings, tmp_path, workers=1, services_modules=())  # no service yet: the process waits
    await cluster.start()
    try:
        doc = await flow.start(Jumper, {"word": "w"})
        await wait_for(flow, doc.process_id, Status.WAITING)
        waiting = await flow.get(doc.process_id)
        real_task_id = waiting.waiting.task_id
        ref = flow.engine.signer.verify(real_task_id)

        payload, _, signature = real_task_id.rpartition(".")
        forged = TaskIdSigner(["an-attackers-key"]).sign(ref)
        altered_ref = TaskIdSigner(["an-attackers-key"]).sign(TaskRef(ref.process_id, ref.case, ref.api, "first", 3))
        altered = altered_ref.rpartition(".")[0] + "." + signature  # other content, our signature
        bad_replies = {
            "forged": forged,
            "altered": altered,
            "bad-signature": f"{payload}.{signature[:-3]}abc",
        }
        await flow.broker.publish([
            Outgoing(SERVICE, name, ServiceReplyMessage(token, ok=True, data={"evil": True}).to_json())
            for name, token in bad_replies.items()
        ])
        parked = await parked_messages(settings, expected=len(bad_replies))
        assert len(parked) == len(bad_replies)
        assert all(p[REASON_HEADER].startswith("taskId rejected") for p in parked), parked
        assert {p[SOURCE_HEADER] for p in parked} == {"service"}
        after = await flow.get(doc.process_id)
        assert (after.version, after.status, after.store) == (waiting.version, Status.WAITING, waiting.store)

        # the genuine reply still resumes the process: nothing was consumed by the fakes
        await flow.broker.publish([
            Outgoing(SERVICE, "real", ServiceReplyMessage(real_task_id, ok=True, data={"step": 1}).to_json())
        ])
        [done] = await wait_finished(flow, [doc.process_id], timeout_s=30)
        assert done.status is Status.COMPLETED and done.store["reply"] == {"step": 1}
    finally:
        codes = cluster.stop()
    assert codes == {"worker-0": 0}, cluster.logs()


async def test_malformed_messages_are_parked_with_reasons_and_the_worker_goes_on(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    cluster = Cluster(settings, tmp_path, workers=1)
    await cluster.start()
    try:
        existing = await flow.start(Jumper, {"word": "before"})
        await wait_finished(flow, [existing.process_id], timeout_s=30)
        versions_before = (await flow.get(existing.process_id)).version
        sign = flow.engine.messages.sign  # signed with our key: the parser's own checks must refuse them
        bad = {
            "bad json": (INNER, sign(b"{this is not json")),
            "not an object": (INNER, b'"just a string"'),
            "wrong schema": (INNER, sign(b'{"process_id": "p", "case": "jumper"}')),
            "unknown case": (INNER, sign(RunStage("p", "no_such_case", "x", 1).to_json())),
            "unknown stage": (INNER, sign(RunStage(existing.process_id, "jumper", "no_such_stage", 1).to_json())),
            "unknown process": (INNER, sign(RunStage("no-such-process", "jumper", "first", 1).to_json())),
            "oversize": (INNER, sign(b'{"pad": "' + b"x" * (settings.max_message_bytes + 10) + b'"}')),
            "reply bad json": (SERVICE, b"\xff\xfe"),
            "reply no task id": (SERVICE, b'{"ok": true}'),
        }
        await flow.broker.publish([Outgoing(queue, name, body) for name, (queue, body) in bad.items()])
        parked = await parked_messages(settings, expected=len(bad))
        reasons = sorted(p[REASON_HEADER] for p in parked)
        assert len(parked) == len(bad), reasons
        for fragment in ("not valid JSON", "inner message is not signed", "'stage' must be a string",
                         "unknown case 'no_such_case'", "has no stage 'no_such_stage'",
                         "no process 'no-such-process'", "over the", "'task_id' must be a string"):
            assert any(fragment in r for r in reasons), (fragment, reasons)
        assert (await flow.get(existing.process_id)).version == versions_before
        assert cluster.workers[0].alive
        # the worker still does its job
        after = await flow.start(Jumper, {"word": "after"})
        [done] = await wait_finished(flow, [after.process_id], timeout_s=30)
        assert done.status is Status.COMPLETED
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), cluster.logs()


async def test_sigterm_finishes_the_in_flight_transition_then_exits(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "slow.marker"
    worker = processes.worker(0, Cluster(settings, tmp_path, workers=0, services_modules=()).env, tmp_path)
    worker.start()
    try:
        doc = await flow.start("slow", {"marker": str(marker), "seconds": 2.0})
        for _ in range(200):  # wait until the stage is running
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), worker.log_tail()
        code = await asyncio.to_thread(worker.stop, 20)
        assert code == 0, worker.log_tail()
        stopped = await flow.get(doc.process_id)
        # the worker committed the slow stage before exiting: it moved on and ran exactly once
        assert (stopped.stage, stopped.version) == ("after", 2)
        assert marker.read_text() == "ran\n"
        worker.start()  # a new worker picks up what the first one published
        [done] = await wait_finished(flow, [doc.process_id], timeout_s=30)
        assert done.status is Status.COMPLETED
    finally:
        worker.stop()
