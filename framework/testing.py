"""A harness for testing your own cases: everything in memory, no server, time under your control.

    async with run_cases([Order], services={"scheduling": fake_schedule}) as env:
        doc = await env.run(Order, {"order_id": "A-1", "desired_date": "2026-12-01"})
        assert doc.status == "completed"

Cases run on the in-memory broker and an in-memory SQLite store with the same engine as production;
service handlers run through the real service SDK. ``run`` waits until the queues drain and, by default,
raises ``ProcessFailed`` if the process failed, so a broken stage fails your test with its reason.

Time is a ``FakeClock``: nothing sleeps. ``run`` skips through waits, retry backoffs and reply deadlines
(when nothing else can happen, the clock jumps to the next due time); ``advance(seconds)`` moves it by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from framework.app import Stageflow
from framework.broker.base import PARKED, Outgoing
from framework.broker.memory import MemoryBroker
from framework.case import BusinessCase
from framework.clock import FakeClock
from framework.document import ProcessDocument, Status
from framework.errors import StageflowError
from framework.observers import Observer
from framework.service.inbox import SqliteInbox
from framework.service.sdk import CommandHandler, Service
from framework.settings import DEMO_SECRET_KEY, Settings
from framework.store.sqlite import SqliteStore
from framework.taskid import TaskIdSigner
from framework.worker import Worker


class ProcessFailed(StageflowError):
    """A process run by the harness ended ``failed``."""


class TestEnvironment:
    __test__ = False  # not a pytest test class

    def __init__(self, flow: Stageflow, broker: MemoryBroker, clock: FakeClock, workers: list[Worker],
                 inbox: SqliteInbox) -> None:
        self.flow = flow
        self.broker = broker
        self.clock = clock
        self.inbox = inbox  # the services' database: `async with env.inbox.transaction() as tx` reads their writes
        self._workers = workers

    async def start(self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None
                    ) -> ProcessDocument:
        return await self.flow.start(case, input, client_key=client_key)

    async def join(self, *, timeout_s: float = 10.0) -> None:
        """Wait until every message has been handled."""
        await self.broker.join(timeout_s=timeout_s)

    async def get(self, process_id: str) -> ProcessDocument:
        return await self.flow.get(process_id)

    async def advance(self, seconds: float) -> None:
        """Move the clock on, fire what became due, and wait until the queues drain."""
        self.clock.advance(seconds)
        await self._fire_due()

    async def _fire_due(self) -> None:
        while await self._workers[0].run_due_work():
            await self.join()
        await self.join()

    async def run(self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None,
                  start_at: float | None = None, raise_on_failure: bool = True, skip_time: bool = True,
                  timeout_s: float = 10.0) -> ProcessDocument:
        """Start a process, wait until the queues drain (skipping through its waits), return its document."""
        doc = await self.flow.start(case, input, client_key=client_key, start_at=start_at)
        await self.join(timeout_s=timeout_s)
        doc = await self.get(doc.process_id)
        while skip_time and doc.status is Status.WAITING and doc.timer_due() is not None:
            self.clock.advance(max(0.0, doc.timer_due() - self.clock.now()))  # type: ignore[operator]
            await self._fire_due()
            doc = await self.get(doc.process_id)
        if raise_on_failure and doc.status is Status.FAILED:
            error = doc.error
            raise ProcessFailed(
                f"process {doc.process_id} failed at stage {error.stage if error else None!r}: "
                f"{error.reason if error else None}",
                process_id=doc.process_id,
            )
        return doc

    def parked(self) -> list[Outgoing]:
        """Messages set aside (malformed, forged taskId, poison), with their reasons in the headers."""
        return self.broker.messages(PARKED)


@asynccontextmanager
async def run_cases(
    cases: Iterable[type[BusinessCase]],
    *,
    services: Mapping[str, CommandHandler] | None = None,
    service_setup_sql: Sequence[str] = (),
    clock: FakeClock | None = None,
    workers: int = 1,
    observers: Sequence[Observer] = (),
) -> AsyncIterator[TestEnvironment]:
    """Run ``cases`` (and fake or real service handlers) in memory for the duration of the block;
    ``observers`` see every transition (see ``framework.observers``)."""
    clock = clock or FakeClock()
    broker = MemoryBroker()
    flow = Stageflow(
        cases=cases, store=SqliteStore(":memory:"), broker=broker, signer=TaskIdSigner([DEMO_SECRET_KEY]),
        settings=Settings(), clock=clock, observers=observers,
    )
    inbox = SqliteInbox(":memory:", setup_sql=service_setup_sql)
    async with flow, inbox:
        # The due-work loop is driven by the environment (advance/run), not by wall-clock polling.
        running = [flow.worker(timer_interval_s=3600.0) for _ in range(max(1, workers))]
        components: list[Any] = [*running]
        components += [Service(api, handler, broker=broker, inbox=inbox) for api, handler in (services or {}).items()]
        for component in components:
            await component.start()
        try:
            yield TestEnvironment(flow, broker, clock, running, inbox)
        finally:
            for component in components:
                await component.stop()
