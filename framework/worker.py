"""The worker: consumes the inner and service queues, runs transitions, and does the due work.

Poison messages: a message that crashes or kills its worker comes back redelivered, but so do all the
innocent messages that worker had in flight, so RabbitMQ's delivery count alone cannot tell them apart.
A redelivered message is therefore run *on its own* (the worker lets in-flight work finish and starts
nothing else meanwhile), after counting that run in the store. If such isolated runs of one message
crash ``poison_after`` times, it is the culprit: its process is marked failed and it is parked.
Redeliveries are rare (they follow a crash), so the hot path never pays for this.

Workers hold no state between messages; run as many as you like. Each also runs the due-work loop
(timers, overdue outboxes, expiry of old processes); a claim in the store makes each due item one
worker's job. Shutdown order (``stop()``): stop consuming, let in-flight transitions finish (each
commits, publishes and acks), stop the loop, leave the worker registry (``framework.heartbeat``), then the
caller closes broker and store. A message whose transition cannot finish in time is simply not acked and
RabbitMQ redelivers it to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import structlog

from framework.broker.base import INNER, SERVICE, Consumer, Delivery
from framework.engine import Engine
from framework.errors import InfrastructureError, MessageError, TaskIdError, UnknownCaseError
from framework.heartbeat import HEARTBEAT_S, Heartbeat
from framework.inbound import Inbound
from framework.observers import Observer, ParkKind
from framework.telemetry import received_message

log = structlog.get_logger("stageflow.worker")

class _Isolation:
    """Many messages run side by side; a redelivered one runs alone, so a crash can be blamed on it."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._alone = asyncio.Lock()

    # enter()/leave(), not a context manager: every message passes here, and a generator-based one costs a
    # generator and two awaits per message.
    async def enter(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()

    def leave(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._alone:
            self._open.clear()  # start nothing new...
            try:
                await self._idle.wait()  # ...and let what runs finish
                yield
            finally:
                self._open.set()


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        prefetch: int = 128,
        timer_interval_s: float = 1.0,
        expire_interval_s: float = 60.0,
        poison_after: int = 3,
        retry_backoff_s: float = 0.5,
        retry_for_s: float = 60.0,
        refresh_cases: Callable[[], Awaitable[Sequence[object]]] | None = None,
        release: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.engine = engine
        # Reads stored workflows' new versions (``Workflows.refresh``): tried once before a message whose case
        # or version is unknown here is set aside, since it may have been saved a moment ago.
        self._refresh_cases = refresh_cases
        self.prefetch = prefetch
        self.timer_interval_s = timer_interval_s
        self.expire_interval_s = expire_interval_s
        self.poison_after = poison_after
        self.retry_backoff_s = retry_backoff_s
        self.retry_for_s = retry_for_s
        self._in_flight: set[asyncio.Task[None]] = set()
        self._due_task: asyncio.Task[None] | None = None
        self._consumers: list[Consumer] = []
        self._stopping = asyncio.Event()
        self._isolation = _Isolation()
        self.heartbeat = Heartbeat(engine.store, engine.cases.carried, release=release, interval_s=heartbeat_s)

    async def start(self) -> None:
        await self.engine.schedules.sync()  # this deployment's schedule definitions win from now on
        await self.heartbeat.start()  # in the worker registry: what this release carries (framework.heartbeat)
        broker = self.engine.broker
        self._consumers = [
            await broker.consume(INNER, self._on_inner, prefetch=self.prefetch),
            await broker.consume(SERVICE, self._on_reply, prefetch=self.prefetch),
        ]
        self._due_task = asyncio.create_task(self._due_loop(), name="stageflow-due-work")
        log.info("worker started", prefetch=self.prefetch)

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        for consumer in self._consumers:  # 1. no new deliveries
            await consumer.cancel()
        if self._in_flight:  # 2. finish what is running: commit, publish, ack
            log.info("finishing in-flight transitions", count=len(self._in_flight))
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)
        if self._due_task is not None:  # 3. stop the due-work loop
            self._due_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._due_task
        await self.heartbeat.stop()  # 4. out of the registry: it carries nothing now
        log.info("worker stopped")

    @property
    def in_flight(self) -> int:
        """Messages being handled right now (the metrics' in-flight gauge reads it when scraped)."""
        return len(self._in_flight)

    async def run_due_work(self) -> int:
        """One pass of the due-work loop (tests and the harness call it to skip through time)."""
        return await self.engine.fire_due()

    async def _on_inner(self, delivery: Delivery) -> None:
        await self._handle(delivery, self.engine.inbound.inner)

    async def _on_reply(self, delivery: Delivery) -> None:
        await self._handle(delivery, self.engine.inbound.reply)

    async def _handle(self, delivery: Delivery, parse: Callable[[bytes], Inbound]) -> None:
        task = asyncio.current_task()  # handlers always run in a task of their own
        if task is not None:
            self._in_flight.add(task)
        observers = self.engine.observers
        if observers:
            received_message(delivery.headers)
            observers.emit(Observer.message_received, delivery.queue, delivery.headers)
        try:
            try:
                message = parse(delivery.body)  # once, here: everything after dispatches on its type
            except MessageError as exc:
                await self._park(delivery, str(exc), _park_kind(exc))
                return
            if delivery.redelivered or delivery.delivery_count > 0:
                async with self._isolation.alone():
                    await self._apply_redelivered(delivery, message)
            else:
                await self._isolation.enter()
                try:
                    await self._apply_with_retries(delivery, message)
                finally:
                    self._isolation.leave()
        except InfrastructureError as exc:
            # Store or broker still down after retrying: leave the message to RabbitMQ to redeliver.
            log.warning("transition not applied, will be redelivered", error=str(exc))
            with contextlib.suppress(InfrastructureError):
                await delivery.nack(requeue=True)
        except Exception:
            # A bug, not bad input: requeue; if it keeps happening the message is parked as poison.
            log.exception("unexpected error handling a message", queue=delivery.queue)
            with contextlib.suppress(InfrastructureError):
                await delivery.nack(requeue=True)
        finally:
            if task is not None:
                self._in_flight.discard(task)
            if observers:
                observers.emit(Observer.message_handled)

    async def _apply_redelivered(self, delivery: Delivery, message: Inbound) -> None:
        ledger = self.engine.store
        runs = await ledger.count_isolated_run(message.key, self.engine.clock.now())
        if self.engine.observers:
            self.engine.observers.emit(Observer.isolated_run, message.key, runs)
        if runs > self.poison_after:
            # This message crashed or killed its worker each time it ran alone: fail its process, park it.
            reason = f"poison message: it crashed or killed its worker {runs - 1} times when run on its own"
            log.error("poison message parked", queue=delivery.queue, crashes=runs - 1)
            await self.engine.condemn(message, reason)
            await self._park(delivery, reason, "poison")
            return
        await self._apply_with_retries(delivery, message)
        await ledger.forget_isolated_runs(message.key)

    async def _park(self, delivery: Delivery, reason: str, kind: ParkKind) -> None:
        log.warning("message parked", queue=delivery.queue, reason=reason)
        await self.engine.broker.park(delivery, reason)
        if self.engine.observers:
            self.engine.observers.emit(Observer.message_parked, delivery.queue, reason, kind=kind)

    async def _apply_with_retries(self, delivery: Delivery, message: Inbound) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s
        delay = self.retry_backoff_s
        # A try that failed on the store or broker may have committed all the same (the commit reached the
        # database, its answer did not): the next try is then a redelivery, which re-publishes what that commit
        # holds instead of leaving it to the relay.
        again = delivery.redelivered
        refreshed = self._refresh_cases is None
        while True:
            try:
                await self.engine.apply(message, redelivered=again)
            except UnknownCaseError as exc:
                if not refreshed and self._refresh_cases is not None:
                    refreshed = True
                    if await self._refresh_cases():
                        continue
                await self._park(delivery, str(exc), _park_kind(exc))
                return
            except MessageError as exc:
                await self._park(delivery, str(exc), _park_kind(exc))
                return
            except InfrastructureError as exc:
                # Short outages (a database restart) are waited out here rather than nacked, so a
                # healthy message does not use up its delivery limit.
                if loop.time() + delay > deadline or self._stopping.is_set():
                    raise
                log.info("store or broker unavailable, retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                again = True
                continue
            await delivery.ack()
            return

    async def _due_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_expiry = loop.time()
        while True:
            try:
                fired = await self.engine.fire_due()
                while fired > 0:  # a full page was due: look again at once
                    fired = await self.engine.fire_due()
                if loop.time() >= next_expiry:
                    await self.engine.expire()
                    next_expiry = loop.time() + self.expire_interval_s
            except InfrastructureError as exc:
                log.warning("due work skipped", error=str(exc))
            except Exception:  # a bug must not end the loop for the rest of the worker's life
                log.exception("due work failed")
            await asyncio.sleep(self.timer_interval_s)


def _park_kind(exc: Exception) -> ParkKind:
    if isinstance(exc, TaskIdError):
        return "forged"
    return "unknown_case" if isinstance(exc, UnknownCaseError) else "malformed"
