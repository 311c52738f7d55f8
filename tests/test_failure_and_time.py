"""Retries, durable waits, start dates, timeouts, failure paths, operator actions and expiry, on real
RabbitMQ + PostgreSQL. Time is injected (a FakeClock shared by the workers in this process): no test
sleeps through a wait; it moves the clock and lets the workers' due-work pass fire what became due."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest

from framework import (
    FakeClock,
    ProcessDocument,
    ProcessFilter,
    ProcessStateError,
    ServiceError,
    Settings,
    Stageflow,
    Status,
    Worker,
)
from framework.messages import ServiceCommand
from framework.service import PostgresInbox, Service, ServiceTransaction
from tests.conftest import BROKER_URL
from tests.support.cluster import services_db_url
from tests.support.failure_cases import CASES

pytestmark = pytest.mark.integration


@dataclass
class TimedEnv:
    flow: Stageflow
    clock: FakeClock
    workers: list[Worker]
    moody_task_ids: list[str] = field(default_factory=list)

    async def advance(self, seconds: float) -> None:
        """Move time on; every worker runs its due-work pass at once (they race for the same timers)."""
        self.clock.advance(seconds)
        await asyncio.gather(*(w.run_due_work() for w in self.workers))

    async def until(self, process_id: str, check: Callable[[ProcessDocument], bool], timeout_s: float = 20
                    ) -> ProcessDocument:
        deadline = time.monotonic() + timeout_s
        while True:
            doc = await self.flow.get(process_id)
            if check(doc):
                return doc
            assert time.monotonic() < deadline, f"condition never met; last document: {doc.public_view()}"
            await asyncio.sleep(0.05)

    async def history(self, process_id: str) -> list[dict[str, Any]]:
        return await self.flow.store.history(process_id)


def waiting(kind: str, reason: str | None = None) -> Callable[[ProcessDocument], bool]:
    def check(doc: ProcessDocument) -> bool:
        w = doc.waiting
        return doc.status is Status.WAITING and w is not None and w.kind == kind and (
            reason is None or getattr(w, "reason", None) == reason)
    return check


def finished(doc: ProcessDocument) -> bool:
    return doc.status.finished


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[TimedEnv]:
    clock = FakeClock(start=time.time())
    async with Stageflow.from_settings(settings, cases=CASES, clock=clock) as flow:
        timed = TimedEnv(flow, clock, [flow.worker(timer_interval_s=3600.0) for _ in range(2)])

        async def moody(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
            timed.moody_task_ids.append(command.task_id)
            if len(timed.moody_task_ids) < 3:
                raise ServiceError("busy, try again", retryable=True)
            return {"mood": "fine"}

        async with PostgresInbox(services_db_url(settings), max_size=2) as inbox:
            service = Service("moody", moody, broker=flow.broker, inbox=inbox)
            for component in (*timed.workers, service):
                await component.start()
            yield timed
            for component in (*timed.workers, service):
                await component.stop()


async def test_retry_backs_off_durably_then_succeeds(env: TimedEnv) -> None:
    doc = await env.flow.start("flaky", {"succeed_on": 3})
    first = await env.until(doc.process_id, waiting("timer", "retry"))
    assert first.attempts == 1 and first.waiting.until == pytest.approx(env.clock.now() + 10)
    await env.advance(9)  # not yet due
    assert (await env.flow.get(doc.process_id)).version == first.version
    await env.advance(1)
    second = await env.until(doc.process_id, lambda d: d.attempts == 2)
    assert second.waiting.until == pytest.approx(env.clock.now() + 20)  # exponential backoff
    await env.advance(20)
    done = await env.until(doc.process_id, finished)
    assert done.status is Status.COMPLETED and done.result == {"succeeded_on": 3}
    events = [h["event"] for h in await env.history(doc.process_id)]
    assert events == ["started", "retry", "retry", "next", "completed"]


async def test_retries_exhausted_record_stage_reason_and_attempts(env: TimedEnv) -> None:
    doc = await env.flow.start("flaky", {"succeed_on": 99})
    await env.until(doc.process_id, lambda d: d.attempts == 1)
    await env.advance(10)
    await env.until(doc.process_id, lambda d: d.attempts == 2)
    await env.advance(20)
    failed = await env.until(doc.process_id, finished)
    assert failed.status is Status.FAILED
    assert (failed.error.stage, failed.error.attempts) == ("flaky", 3)
    assert failed.error.reason == "ConnectionError: attempt 3 failed"


async def test_non_retryable_error_fails_at_once(env: TimedEnv) -> None:
    doc = await env.flow.start("flaky", {"succeed_on": 1, "fatal": True})
    failed = await env.until(doc.process_id, finished)
    assert failed.status is Status.FAILED
    assert failed.error.attempts == 1
    assert failed.error.reason == "NonRetryableError: the input can never work"


async def test_wait_stages_are_durable_and_skipped_with_injected_time(env: TimedEnv) -> None:
    t0 = env.clock.now()
    doc = await env.flow.start("waiter", {"until": t0 + 3600})
    w = await env.until(doc.process_id, waiting("timer", "wait"))
    assert w.waiting.until == pytest.approx(t0 + 60) and w.stage == "middle"
    await env.advance(59.5)
    assert (await env.flow.get(doc.process_id)).version == w.version
    await env.advance(0.5)
    w2 = await env.until(doc.process_id, lambda d: d.stage == "finish")
    assert w2.waiting.until == pytest.approx(t0 + 3600)
    await env.advance(3540)
    done = await env.until(doc.process_id, finished)
    assert done.result == {"began": t0, "middle": pytest.approx(t0 + 60), "finished": pytest.approx(t0 + 3600)}


async def test_a_timer_fires_once_with_many_workers(env: TimedEnv) -> None:
    docs = [await env.flow.start("waiter", {"until": env.clock.now()}) for _ in range(20)]
    for d in docs:
        await env.until(d.process_id, waiting("timer", "wait"))
    await env.advance(60)
    for d in docs:
        await env.until(d.process_id, finished)
        stages = [h.get("stage") for h in await env.history(d.process_id)]
        assert stages.count("middle") == 1, stages


async def test_start_at_waits_for_its_date(env: TimedEnv) -> None:
    doc = await env.flow.start("optional_step", start_at=env.clock.now() + 86400)
    assert doc.status is Status.WAITING and doc.waiting.reason == "start"
    await env.advance(86399)
    assert (await env.flow.get(doc.process_id)).version == 1  # nothing ran
    await env.advance(1)
    assert (await env.until(doc.process_id, finished)).status is Status.COMPLETED


async def test_stage_timeout_is_retried_then_fails(env: TimedEnv) -> None:
    doc = await env.flow.start("timeouts", {"stage_seconds": 5})
    await env.until(doc.process_id, waiting("timer", "retry"))
    await env.advance(5)
    failed = await env.until(doc.process_id, finished)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    error = failed.error
    assert (error.stage, error.attempts, error.reason) == ("slow", 2, "stage timed out after 0.3 s")


async def test_reply_deadline_resends_the_same_command_then_takes_on_failed(env: TimedEnv, settings: Settings) -> None:
    doc = await env.flow.start("timeouts", {"stage_seconds": 0})
    asked = await env.until(doc.process_id, waiting("service"))
    assert asked.waiting.deadline == pytest.approx(env.clock.now() + 30)
    await env.advance(30)  # no reply: retry after the backoff, re-sending the same command
    await env.until(doc.process_id, waiting("resend"))
    await env.advance(5)
    again = await env.until(doc.process_id, lambda d: waiting("service")(d) and d.waiting.attempt == 2)
    assert again.waiting.task_id == asked.waiting.task_id
    await env.advance(30)
    done = await env.until(doc.process_id, finished)
    assert done.status is Status.COMPLETED
    assert done.result == {"fallback": True, "because": "no reply from service 'silent' within 30 s", "attempts": 2}
    assert [f.stage for f in done.failures] == ["ask"]
    sent = await _drain(f"{settings.queue_prefix}.command.silent")
    assert len(sent) == 2 and len({m["task_id"] for m in sent}) == 1


async def test_retryable_service_errors_resend_the_same_task_id(env: TimedEnv) -> None:
    doc = await env.flow.start("retryable_service")
    for retry in (1, 2):
        await env.until(doc.process_id, lambda d, r=retry: waiting("resend")(d) and d.attempts == r)
        await env.advance(3 * 2 ** (retry - 1))
    done = await env.until(doc.process_id, finished)
    assert done.result == {"mood": "fine"}
    assert len(env.moody_task_ids) == 3 and len(set(env.moody_task_ids)) == 1


async def test_optional_stage_failure_is_recorded_and_the_process_goes_on(env: TimedEnv) -> None:
    doc = await env.flow.start("optional_step")
    done = await env.until(doc.process_id, finished)
    assert done.status is Status.COMPLETED and done.result == "stored"
    assert done.failures[0].stage == "enrich" and "enrichment service is down" in done.failures[0].reason


async def test_cancel_stops_a_waiting_process_for_good(env: TimedEnv) -> None:
    doc = await env.flow.start("waiter", {"until": env.clock.now()})
    await env.until(doc.process_id, waiting("timer"))
    cancelled = await env.flow.operations.cancel(doc.process_id, reason="customer called")
    assert cancelled.status is Status.CANCELLED and cancelled.error.reason == "customer called"
    await env.advance(120)
    await asyncio.sleep(0.3)
    assert (await env.flow.get(doc.process_id)).version == cancelled.version
    with pytest.raises(ProcessStateError):
        await env.flow.operations.cancel(doc.process_id)


async def test_retry_a_failed_process_with_corrected_input(env: TimedEnv) -> None:
    doc = await env.flow.start("fixable", {"quantity": 0})
    failed = await env.until(doc.process_id, finished)
    assert failed.error.stage == "check"
    with pytest.raises(Exception, match="quantity"):
        await env.flow.operations.retry(doc.process_id, input={"quantity": "lots"})
    assert (await env.flow.get(doc.process_id)).version == failed.version  # bad input changed nothing
    await env.flow.operations.retry(doc.process_id, input={"quantity": 5})
    done = await env.until(doc.process_id, lambda d: d.status is Status.COMPLETED)
    assert done.result == {"quantity": 5, "prepared": True}
    stages = [h.get("stage") for h in await env.history(doc.process_id)]
    assert stages.count("prepare") == 1  # restarted at the failed stage, not from the top


async def test_reprocess_by_filter(env: TimedEnv) -> None:
    fixable = [await env.flow.start("fixable", {"quantity": 0}) for _ in range(5)]
    other = await env.flow.start("flaky", {"succeed_on": 1, "fatal": True})
    for d in (*fixable, other):
        await env.until(d.process_id, finished)
    progress: list[tuple[int, int]] = []
    counts = await env.flow.operations.reprocess(
        ProcessFilter(case="fixable", failed_stage="check"), progress=lambda r, s: progress.append((r, s))
    )
    assert counts == {"retried": 5, "skipped": 0} and progress[-1] == (5, 0)
    for d in fixable:
        again = await env.until(d.process_id, lambda x: x.status is Status.FAILED and x.version > 3)
        assert [h["event"] for h in await env.history(d.process_id)][-2] == "retried"
        assert again.error.stage == "check"
    assert (await env.flow.get(other.process_id)).version == 2  # not matched by the filter


async def test_finished_processes_expire_after_their_ttl(env: TimedEnv, settings: Settings) -> None:
    doc = await env.flow.start("optional_step")
    await env.until(doc.process_id, finished)
    assert await env.flow.engine.expire() == 0
    env.clock.advance(settings.process_ttl_s + 1)
    assert await env.flow.engine.expire() == 1
    assert await env.flow.store.load(doc.process_id) is None
    assert await env.flow.store.history(doc.process_id) == []


async def _drain(queue_name: str) -> list[dict[str, Any]]:
    import orjson

    messages = []
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(orjson.loads(message.body))
    return messages
