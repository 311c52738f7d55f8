"""RabbitMQ broker (aio-pika): the production broker.

Topology, declared idempotently on connect: durable quorum queues ``<prefix>.inner``,
``<prefix>.service`` and ``<prefix>.command.<api>`` (declared on first use), each with
``x-delivery-limit`` so a message that keeps killing its consumer is dead-lettered to
``<prefix>.parked`` instead of looping. Messages are persistent and published with confirms and
``mandatory`` (an unroutable message is an error, not a silent drop). Consumers ack manually with a
bounded prefetch. ``connect_robust`` reconnects after a broker restart and restores the channels; each
consumer then starts again on its restored channel (``RabbitConsumer``). Given the nodes of a cluster
(comma-separated URLs), each reconnect goes to a reachable node (``framework/broker/nodes.py``) and the
quorum queues are declared with a replica on each listed node (``x-quorum-initial-group-size``).

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

from framework.broker.acks import AckBatcher as _AckBatcher
from framework.broker.base import INNER, PARKED, SERVICE, Broker, Consumer, Delivery, Handler, Outgoing
from framework.broker.nodes import BrokerNodes, NodeRotation
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
# aio-pika waits 5 s between reconnect attempts by default: after losing a cluster node, that is 5 s of no
# progress for a connection the next node would take at once.
_RECONNECT_INTERVAL_S = 1.0
_PUBLISH_RETRY_S = 5.0  # a publish cut off by a lost connection is sent again for this long, then left to the relay
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


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


def _refused(doing: str, exc: Exception) -> BrokerError:
    """A permission RabbitMQ denies this user: final, not a reason to retry."""
    return BrokerError(f"RabbitMQ refused {doing}: {exc}", hint="see the permissions per role in docs/deploy.md")


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
        self, url: str, *, prefix: str = "stageflow", delivery_limit: int = 20, connection_name: str = "stageflow",
        quorum_group_size: int | None = None,
    ) -> None:
        """``url``: one node, or the nodes of a cluster, comma-separated. ``quorum_group_size``: replicas of each
        new queue (None: one per listed node when there are several; 0: RabbitMQ's default)."""
        self._nodes = BrokerNodes.parse(url)
        self._rotation = NodeRotation(self._nodes.addresses) if len(self._nodes.addresses) > 1 else None
        if quorum_group_size is None:
            quorum_group_size = len(self._nodes.addresses) if self._rotation is not None else 0
        if quorum_group_size < 0:
            raise ConfigurationError(f"quorum_group_size must be 0 or more, not {quorum_group_size}")
        self._quorum_group_size = quorum_group_size
        self._reconnect_listeners: list[Callable[[str | None], None]] = []
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

    @property
    def connected_node(self) -> str | None:
        """``host:port`` of the cluster node the connection is on (None for a single-URL broker)."""
        if self._rotation is None or self._rotation.current is None:
            return None
        host, port = self._rotation.current
        return f"{host}:{port}"

    def on_reconnect(self, listener: Callable[[str | None], None]) -> None:
        """Call ``listener(connected_node)`` after each reconnect (for a metric or a log; must not block)."""
        self._reconnect_listeners.append(listener)

    def _reconnected(self, *_: Any) -> None:
        self.reconnects += 1
        log.warning("reconnected to RabbitMQ", node=self.connected_node, reconnects=self.reconnects)
        for listener in self._reconnect_listeners:
            try:
                listener(self.connected_node)
            except Exception:  # a listener's bug must not break the reconnect
                log.exception("a reconnect listener failed")

    async def connect(self) -> None:
        try:
            # What connect_robust does, with the node rotation (which it would put in the URL's query), and our
            # reconnect interval unless the URL names one.
            url = aio_pika.connection.make_url(self._nodes.url)
            if "reconnect_interval" not in url.query:
                url = url.update_query(reconnect_interval=_RECONNECT_INTERVAL_S)
            connection = CoalescingConnection(
                url,
                client_properties={"connection_name": self._connection_name}, nodes=self._rotation,
            )
            self._connection = connection
            await connection.connect()
            connection.reconnect_callbacks.add(self._reconnected)  # counts it in ``reconnects`` (base.Broker)
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
        if self._quorum_group_size:
            arguments["x-quorum-initial-group-size"] = self._quorum_group_size
        if queue != PARKED:
            arguments["x-delivery-limit"] = self._delivery_limit
            # Through our exchange, not the default one: declaring a queue needs write on its dead-letter exchange,
            # and write on amq.default would let a role publish to any queue. (Queues declared before keep "":
            # an existing queue is declared passively, so its arguments are never compared.)
            arguments["x-dead-letter-exchange"] = self._prefix
            arguments["x-dead-letter-routing-key"] = self.queue_name(PARKED)
        return arguments

    async def _ensure_queue(self, queue: str, channel: aio_pika.abc.AbstractChannel | None = None) -> AbstractQueue:
        """Declare ``queue`` (idempotent on the broker; cached by ``_declare_once`` for the hot path)."""
        name = self.queue_name(queue)
        channel = channel or self._publish_channel
        if channel is None:
            raise BrokerError("the RabbitMQ broker is not connected", hint="call `await broker.connect()` first")
        try:
            if await self._exists(name):  # passively: needs no write on the dead-letter exchange (amq.default)
                declared = await channel.declare_queue(name, passive=True)
            else:
                declared = await channel.declare_queue(name, durable=True, arguments=self._arguments(queue))
            # Published through a topic exchange named after the prefix, one exact binding per queue, so that
            # RabbitMQ's topic permissions can say which queues a role may publish to (docs/deploy.md).
            exchange = await channel.declare_exchange(self._prefix, aio_pika.ExchangeType.TOPIC, durable=True)
            await declared.bind(exchange, routing_key=name)
            return declared
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise _refused(f"declaring {name!r}", exc) from exc
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {name!r} exists with other arguments: {exc}",
                hint="delete the queue, or use the same delivery limit / queue type as when it was created "
                "(it was created by another process between our check and our declaration)",
            ) from exc

    async def _exists(self, name: str) -> bool:
        """Whether the queue exists, asked on a channel of its own (RabbitMQ closes it if not). A role that may not
        write to the default exchange (a service, the gateway: docs/deploy.md) cannot declare a queue that
        dead-letters there, but can use one a worker declared."""
        assert self._connection is not None
        scratch = await self._connection.channel()
        try:
            await scratch.declare_queue(name, passive=True)
            return True
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            if not scratch.is_closed:
                await scratch.close()

    async def _declare_once(self, queue: str) -> None:
        if queue in self._declared:
            return
        async with self._declare_lock:
            if queue not in self._declared:
                await self._ensure_queue(queue)
                self._declared.add(queue)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish with confirms. A publish caught by a lost connection (a node gone, a broker restart) or nacked
        is sent again, once the connection is back, for up to ``_PUBLISH_RETRY_S``: the messages' ids are
        deterministic, so a copy that did reach a queue is a duplicate its receiver drops, and none is lost."""
        if self._publish_channel is None or self._connection is None:
            raise BrokerError("the RabbitMQ broker is not connected", hint="call `await broker.connect()` first")
        first_error = await self._attempt(messages)
        if first_error is None:
            return
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + _PUBLISH_RETRY_S, 0.05
        while True:
            with contextlib.suppress(TimeoutError):  # wait for the reconnect, but not past the deadline
                await asyncio.wait_for(self._connection.connected.wait(), max(deadline - loop.time(), 0.01))
            error = await self._attempt(messages)
            if error is None:
                return
            if loop.time() + delay > deadline:
                raise BrokerError(f"publish not confirmed: {type(error).__name__}: {error} (first: {first_error})")
            await asyncio.sleep(delay)  # the channels are restored just after the connection
            delay = min(delay * 2, 1.0)

    async def _attempt(self, messages: Sequence[Outgoing]) -> Exception | None:
        """One publish on the next channel: None once confirmed, else the transient error (a refusal raises)."""
        channel = self._publish_channels[next(self._next_channel) % len(self._publish_channels)]
        try:
            await self._publish(channel, messages)
            return None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise _refused("publishing", exc) from exc
        except _TRANSIENT_ERRORS as exc:
            await self._after_failure(channel, exc)
            return exc

    async def _after_failure(self, channel: aio_pika.abc.AbstractChannel, exc: Exception) -> None:
        """After a nack, publish on a new channel. Seen on RabbitMQ 3.10 after a quorum queue's leader died: a
        channel that published while no leader was known had every later publish nacked, for over a minute,
        while new channels published fine (tests/test_rabbit_cluster.py)."""
        if not isinstance(exc, aiormq.exceptions.DeliveryError) or self._connection is None:
            return
        if channel not in self._publish_channels:
            return  # renewed already by a concurrent publish
        with contextlib.suppress(*_TRANSIENT_ERRORS, RuntimeError):
            fresh = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            if channel in self._publish_channels:
                self._publish_channels[self._publish_channels.index(channel)] = fresh
                self._publish_channel = self._publish_channels[0]
                log.warning("publish nacked, publishing on a new channel", node=self.connected_node)
                await channel.close()
            else:
                await fresh.close()

    async def _publish(self, channel: aio_pika.abc.AbstractChannel, messages: Sequence[Outgoing]) -> None:
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
        except aio_pika.exceptions.PublishError as exc:  # refused (nack, unroutable): sending again won't help
            raise BrokerError(f"publish not confirmed: {type(exc).__name__}: {exc}") from exc

    async def _publish_one(self, channel: aiormq.Channel, message: Outgoing) -> None:
        await channel.basic_publish(
            message.body,
            exchange=self._prefix,
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
            except aiormq.exceptions.ChannelAccessRefused as exc:
                raise _refused(f"consuming {queue!r}", exc) from exc
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
