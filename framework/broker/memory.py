"""In-memory broker: the embedded default for demos and users' unit tests.

Same contract as the RabbitMQ broker inside one Python process: unacked messages are redelivered when
nacked with requeue, a delivery limit parks poison messages, and ``join()`` waits until all queues are
drained (the test harness uses it). It keeps nothing across restarts, so it is not for production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from framework.broker.base import PARKED, REASON_HEADER, Broker, Consumer, Delivery, Handler, Outgoing


class MemoryDelivery(Delivery):
    def __init__(self, broker: MemoryBroker, queue: str, message: Outgoing, count: int) -> None:
        self._broker = broker
        self.queue = queue
        self.body = message.body
        self.message_id = message.message_id
        self.headers: Mapping[str, Any] = message.headers
        self.delivery_count = count
        self.redelivered = count > 0
        self._message = message
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def nack(self, *, requeue: bool) -> None:
        self._settle()
        if requeue:
            self._broker._requeue(self.queue, self._message, self.delivery_count + 1)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery already acked or nacked")
        self._settled = True
        self._broker._unacked[self.queue] -= 1
        self._broker._wake()


class MemoryConsumer(Consumer):
    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MemoryBroker(Broker):
    def __init__(self, *, delivery_limit: int = 20) -> None:
        self._delivery_limit = delivery_limit
        self._ready: dict[str, deque[tuple[Outgoing, int]]] = defaultdict(deque)
        self._unacked: dict[str, int] = defaultdict(int)
        self._consumers: list[MemoryConsumer] = []
        self._consumed: set[str] = set()
        self._changed = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        """Nothing to connect to: the queues live in this process."""

    async def ping(self) -> None:
        """Reachable while this process runs."""

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.cancel()
        self._consumers.clear()

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        for message in messages:
            self._ready[message.queue].append((message, 0))
        self._wake()

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        self._consumed.add(queue)
        consumer = MemoryConsumer(asyncio.create_task(self._consume_loop(queue, handler, prefetch)))
        self._consumers.append(consumer)
        return consumer

    def messages(self, queue: str) -> list[Outgoing]:
        """Messages waiting on ``queue`` (e.g. ``PARKED``), for inspection in tests."""
        return [message for message, _ in self._ready[queue]]

    async def join(self, queues: Sequence[str] | None = None, *, timeout_s: float = 30.0) -> None:
        """Wait until ``queues`` (default: every queue someone consumes) are empty and nothing is unacked on them.
        (A command for a service nobody runs stays queued, as it would on RabbitMQ, without blocking the join.)"""
        async with asyncio.timeout(timeout_s):
            while any(
                self._ready[q] or self._unacked[q]
                for q in (queues if queues is not None else [q for q in self._ready if q in self._consumed])
            ):
                self._changed.clear()
                await self._changed.wait()

    def _requeue(self, queue: str, message: Outgoing, count: int) -> None:
        if count >= self._delivery_limit:
            headers = {**message.headers, REASON_HEADER: f"delivery limit of {self._delivery_limit} reached"}
            parked = Outgoing(PARKED, message.message_id, message.body, headers)
            self._ready[PARKED].append((parked, 0))
        else:
            self._ready[queue].appendleft((message, count))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def _consume_loop(self, queue: str, handler: Handler, prefetch: int) -> None:
        ready = self._ready[queue]
        while True:
            if not ready or self._unacked[queue] >= prefetch:
                self._changed.clear()
                await self._changed.wait()
                continue
            message, count = ready.popleft()
            self._unacked[queue] += 1
            task = asyncio.create_task(handler(MemoryDelivery(self, queue, message, count)))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
