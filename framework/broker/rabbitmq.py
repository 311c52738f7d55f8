"""RabbitMQ broker (aio-pika): the production broker.

Topology, declared idempotently on connect: durable quorum queues ``<prefix>.inner``,
``<prefix>.service`` and ``<prefix>.command.<api>`` (declared on first use), each with
``x-delivery-limit`` so a message that keeps killing its consumer is dead-lettered to
``<prefix>.parked`` instead of looping. Messages are persistent and published with confirms and
``mandatory`` (an unroutable message is an error, not a silent drop). Consumers ack manually with a
bounded prefetch. ``connect_robust`` reconnects after a broker restart and restores the channels; each
consumer then starts again on its restored channel (``RabbitConsumer``).

Hot-path economies: publishes go round-robin over a few confirm channels (aiormq holds a channel's lock
while it queues each publish, so one channel makes concurrent publishers queue), and the acks of a
consumer's finished deliveries are sent together, one ``basic.ack multiple=True`` for a run of
consecutive delivery tags that are all done (never one whose work is still running). Publishes and acks
do not wait for their frames to reach the socket (publishes wait for the confirm), and the frames of one
event-loop pass leave in one socket write (``framework/broker/transport.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from framework.broker.base import INNER, PARKED, SERVICE, Broker, Consumer, Delivery, Handler, Outgoing
from framework.broker.transport import CoalescingConnection
from framework.errors import BrokerError, ConfigurationError

log = structlog.get_logger("stageflow.broker")

# ChannelInvalidStateError (a RuntimeError, not an AMQPError) is what a channel raises while its connection
# is gone or being restored by connect_robust: publish, ack and nack on it are transient failures too.
_TRANSIENT_ERRORS = (
    aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError, OSError,
)


_PUBLISH_CHANNELS = 4
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


class _AckBatcher:
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


class RabbitDelivery(Delivery):
    def __init__(self, queue: str, message: aiormq.abc.DeliveredMessage, acks: _AckBatcher) -> None:
        properties = message.header.properties
        self.queue = queue
        self.body = message.body
        self.message_id = properties.message_id
        self.headers: Mapping[str, Any] = properties.headers or {}
        self.redelivered = bool(message.redelivered)
        count = self.headers.get("x-delivery-count", 0)
        self.delivery_count = count if isinstance(count, int) else 0
        self._tag: int = message.delivery_tag  # type: ignore[assignment]  # always set on a Basic.Deliver
        self._channel = message.channel
        self._acks = acks

    async def ack(self) -> None:
        try:
            await self._acks.ack(self._tag)
        except _TRANSIENT_ERRORS as exc:  # the channel is gone: RabbitMQ will redeliver
            raise BrokerError(f"ack failed: {exc}") from exc

    async def nack(self, *, requeue: bool) -> None:
        try:
            await self._channel.basic_nack(self._tag, requeue=requeue)
        except _TRANSIENT_ERRORS as exc:
            raise BrokerError(f"nack failed: {exc}") from exc
        self._acks.settled(self._tag)


async def _underlay(channel: aio_pika.abc.AbstractChannel) -> aiormq.Channel:
    """The aiormq channel under an aio-pika one. aio-pika declares it as aiormq's ABC, which has neither the
    consumers nor publish's ``wait``; the object is always an ``aiormq.Channel`` (a cast: this is the hot path)."""
    return cast(aiormq.Channel, await channel.get_underlay_channel())


class RabbitConsumer(Consumer):
    """Consumes one queue on its own channel, straight from aiormq.

    aio-pika's ``Queue.consume`` wraps every delivery in an ``IncomingMessage`` and runs the callback in a
    task of its own, on top of aiormq's task per delivery: ~6 % of a worker's time under load. Consuming on
    the channel's aiormq channel skips both; in exchange, when ``connect_robust`` restores the channel (a
    new aiormq channel, its delivery tags from 1 again), the consumer starts again on it here.
    """

    def __init__(
        self, channel: aio_pika.abc.AbstractRobustChannel, name: str, queue: str, handler: Handler, prefetch: int,
        declare: Callable[[], Awaitable[Any]],
    ) -> None:
        self._channel = channel
        self._declare = declare  # the queue, as the broker declares it (recreated if it was deleted)
        self._name = name
        self._queue = queue
        self._handler = handler
        self._prefetch = prefetch
        self._consuming: tuple[aiormq.Channel, str] | None = None  # (aiormq channel, consumer tag)
        self._acks: _AckBatcher | None = None
        self._cancelled = False
        self._restarting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        underlay = await _underlay(self._channel)
        if self._consuming is not None and self._consuming[0] is underlay and self._consuming[1] in underlay.consumers:
            return  # already consuming on this channel
        # Set here too, not only by the robust channel's restore: a retry can reach a restored channel before
        # the restore has sent its qos, and a consumer made before the qos would have no prefetch limit.
        await underlay.basic_qos(prefetch_count=self._prefetch)
        underlay.on_consumer_cancel_callbacks.add(self._on_cancelled_by_broker)
        ok = await underlay.basic_consume(self._name, self._on_message)
        self._consuming = (underlay, ok.consumer_tag)  # type: ignore[assignment]  # always set by RabbitMQ

    def consume_again(self, *_: Any) -> None:
        """A reopen callback of the robust channel (its qos and queue are restored by then). The retrying
        runs in a task of its own: the channel's restore awaits its callbacks, and must not wait on a retry
        that only the next restore (after the connection drops again) can satisfy."""
        if not self._cancelled and (self._restarting is None or self._restarting.done()):
            self._restarting = asyncio.get_running_loop().create_task(self._start_until_it_takes())

    async def _on_cancelled_by_broker(self, frame: aiormq.spec.Basic.Cancel) -> None:
        """RabbitMQ cancelled the consumer (its queue was deleted, or moved in a cluster): consume again,
        declaring the queue anew, rather than sit idle until the connection happens to drop."""
        if self._consuming is not None and frame.consumer_tag == self._consuming[1]:
            self._consuming = None
            log.warning("RabbitMQ cancelled the consumer, consuming again", queue=self._name)
            self.consume_again()

    async def _start_until_it_takes(self) -> None:
        """RabbitMQ may still be starting the queue after a restart: keep trying until it takes the consumer."""
        delay = 0.2
        while not self._cancelled:
            try:
                await self._declare()
                await self.start()
                return
            except Exception as exc:  # noqa: BLE001 - a consumer that stops retrying leaves the worker idle
                log.warning("consuming again failed, retrying", queue=self._name, error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        acks = self._acks
        if acks is None or acks.channel is not message.channel:  # delivery tags start at 1 on each channel
            acks = self._acks = _AckBatcher(message.channel)
        await self._handler(RabbitDelivery(self._queue, message, acks))

    async def cancel(self) -> None:
        self._cancelled = True
        self._channel.reopen_callbacks.discard(self.consume_again)
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
        if self._consuming is None:
            return
        underlay, tag = self._consuming
        with contextlib.suppress(*_TRANSIENT_ERRORS, RuntimeError):
            await underlay.basic_cancel(tag)  # the channel may be gone already: then RabbitMQ stopped with it


class RabbitBroker(Broker):
    def __init__(
        self, url: str, *, prefix: str = "stageflow", delivery_limit: int = 20, connection_name: str = "stageflow"
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._delivery_limit = delivery_limit
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None  # also declares queues
        self._publish_channels: list[aio_pika.abc.AbstractChannel] = []
        self._next_channel = itertools.count()
        self._declared: set[str] = set()
        self._declare_lock = asyncio.Lock()

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ name of a logical queue (``inner`` -> ``stageflow.inner``)."""
        return f"{self._prefix}.{queue.replace(':', '.')}"

    async def connect(self) -> None:
        try:
            self._connection = await aio_pika.connect_robust(
                self._url, client_properties={"connection_name": self._connection_name},
                connection_class=CoalescingConnection,
            )
            self._connection.reconnect_callbacks.add(self._count_reconnect)
            self._publish_channels = [
                await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                for _ in range(_PUBLISH_CHANNELS)
            ]
            self._publish_channel = self._publish_channels[0]
            for queue in (PARKED, INNER, SERVICE):
                await self._ensure_queue(queue)
        except _TRANSIENT_ERRORS as exc:
            raise BrokerError(
                f"cannot reach RabbitMQ: {exc}", hint="check STAGEFLOW_BROKER_URL and that RabbitMQ is running"
            ) from exc

    def _count_reconnect(self, *_: Any) -> None:
        self.reconnects += 1

    async def ping(self) -> None:
        # Opening and closing a channel is one round trip on the live connection, and touches no queue.
        if self._connection is None or self._connection.is_closed:
            raise BrokerError("the RabbitMQ broker is not connected", hint="check STAGEFLOW_BROKER_URL")
        try:
            channel = await asyncio.wait_for(self._connection.channel(), 5)
            await channel.close()
        except (TimeoutError, *_TRANSIENT_ERRORS, RuntimeError) as exc:
            raise BrokerError(f"RabbitMQ unavailable: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def _arguments(self, queue: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if queue != PARKED:
            arguments["x-delivery-limit"] = self._delivery_limit
            arguments["x-dead-letter-exchange"] = ""
            arguments["x-dead-letter-routing-key"] = self.queue_name(PARKED)
        return arguments

    async def _ensure_queue(self, queue: str, channel: aio_pika.abc.AbstractChannel | None = None) -> AbstractQueue:
        """Declare ``queue`` (idempotent on the broker; cached by ``_declare_once`` for the hot path)."""
        name = self.queue_name(queue)
        channel = channel or self._publish_channel
        if channel is None:
            raise BrokerError("the RabbitMQ broker is not connected", hint="call `await broker.connect()` first")
        try:
            return await channel.declare_queue(name, durable=True, arguments=self._arguments(queue))
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {name!r} exists with other arguments: {exc}",
                hint="delete the queue, or use the same delivery limit / queue type as when it was created",
            ) from exc

    async def _declare_once(self, queue: str) -> None:
        if queue in self._declared:
            return
        async with self._declare_lock:
            if queue not in self._declared:
                await self._ensure_queue(queue)
                self._declared.add(queue)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self._publish_channel is None:
            raise BrokerError("the RabbitMQ broker is not connected", hint="call `await broker.connect()` first")
        channel = self._publish_channels[next(self._next_channel) % len(self._publish_channels)]
        try:
            for message in messages:
                await self._declare_once(message.queue)
            # Straight to aiormq (aio-pika's Message and Exchange.publish only wrap this, at a cost per message).
            # Confirms are pipelined: all messages go out, then we wait for all acks together.
            underlay = await _underlay(channel)
            if len(messages) == 1:  # a transition's usual outbox: no task for gather to wrap it in
                await self._publish_one(underlay, messages[0])
            else:
                await asyncio.gather(*(self._publish_one(underlay, message) for message in messages))
        except (*_TRANSIENT_ERRORS, aio_pika.exceptions.PublishError) as exc:
            raise BrokerError(f"publish not confirmed: {type(exc).__name__}: {exc}") from exc

    async def _publish_one(self, channel: aiormq.Channel, message: Outgoing) -> None:
        await channel.basic_publish(
            message.body,
            routing_key=self.queue_name(message.queue),
            properties=aiormq.spec.Basic.Properties(
                message_id=message.message_id,
                headers=dict(message.headers) or None,
                content_type="application/json",
                delivery_mode=_PERSISTENT,
            ),
            mandatory=True,
            wait=False,  # the confirm is what we wait for; not also for the socket write
        )

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        if self._connection is None:
            raise BrokerError("the RabbitMQ broker is not connected", hint="call `await broker.connect()` first")
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + 30.0, 0.2
        while True:
            try:
                return await self._consume(queue, handler, prefetch)
            except (*_TRANSIENT_ERRORS, RuntimeError) as exc:
                # Workers starting together race to create a quorum queue: RabbitMQ may answer basic.consume
                # with INTERNAL_ERROR, or crash the channel ({error,noproc}: the queue's process is not up yet)
                # and close the whole connection, so opening the next channel raises aiormq's RuntimeError
                # ("<Connection ...> closed"). connect_robust reconnects, and a new channel on it consumes.
                if not isinstance(exc, _TRANSIENT_ERRORS) and "closed" not in str(exc):
                    raise  # a RuntimeError of our own making, not the broker's
                if loop.time() + delay > deadline:
                    raise BrokerError(f"cannot consume {queue!r}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _consume(self, queue: str, handler: Handler, prefetch: int) -> Consumer:
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)  # kept by the robust channel for its restores
        await self._ensure_queue(queue, channel)  # declared on this channel: redeclared when it is restored
        consumer = RabbitConsumer(
            channel, self.queue_name(queue), queue, handler, prefetch,
            declare=lambda: self._ensure_queue(queue, channel),
        )
        await consumer.start()
        channel.reopen_callbacks.add(consumer.consume_again)
        return consumer
