"""Acking a consumer's finished deliveries together (the RabbitMQ broker's hot path)."""

from __future__ import annotations

import asyncio

import aiormq


class AckBatcher:
    """Acks the finished deliveries of one consumer channel together, once per event-loop pass.

    Delivery tags on a channel are consecutive from 1. ``floor`` is the highest tag such that every tag
    up to it is settled; a run of done tags right above it goes as one ``multiple=True`` ack, and a done
    tag above a gap (an earlier delivery still running) is acked on its own, so nothing waits.
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._floor = 0
        self._settled: set[int] = set()  # above the floor: acked or nacked already
        self._done: dict[int, asyncio.Future[None]] = {}  # finished, ack not sent yet
        self._flush_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one flush at a time: a multiple ack must not overtake a single one

    def settled(self, tag: int) -> None:
        """A tag nacked or rejected elsewhere: it no longer blocks a multiple ack."""
        self._settled.add(tag)

    async def ack(self, tag: int) -> None:
        future = asyncio.get_running_loop().create_future()
        self._done[tag] = future
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush())  # runs after this pass: acks gather
        await future

    async def _flush(self) -> None:
        async with self._lock:
            done, self._done, self._flush_task = self._done, {}, None
            top = self._floor
            while top + 1 in done or top + 1 in self._settled:
                top += 1
            singles = [tag for tag in done if tag > top]
            # The multiple ack names the highest *done* tag of the run: RabbitMQ looks that exact tag up
            # among the unacked ones and closes the channel (unknown delivery tag, every unacked message
            # redelivered) if it was acked or nacked already. Settled tags below it are skipped.
            last = max((tag for tag in done if tag <= top), default=None)
            try:
                # ack() returns once the frame is queued for the socket (an ack lost with the connection is a
                # redelivery, and the redelivered message is a stale duplicate that is dropped).
                if last is not None:
                    await self.channel.basic_ack(delivery_tag=last, multiple=True, wait=False)
                for tag in singles:
                    await self.channel.basic_ack(delivery_tag=tag, wait=False)
            except Exception as exc:  # noqa: BLE001 - each waiting ack() raises it (mapped to BrokerError)
                for future in done.values():
                    if not future.done():  # cancelled with its handler when the channel closed
                        future.set_exception(exc)
                return
            self._settled.update(singles)
            self._settled = {tag for tag in self._settled if tag > top}
            self._floor = top
            for future in done.values():
                if not future.done():
                    future.set_result(None)
