"""A RabbitMQ channel whose connection is gone (or being restored by connect_robust) raises aiormq's
``ChannelInvalidStateError``, a ``RuntimeError`` rather than an ``AMQPError``. The broker must report it
as a ``BrokerError`` like any other transient broker failure, so the engine leaves the outbox to the
relay instead of raising a raw aio-pika error out of ``start()`` after the process was created (found by
``make chaos``: RabbitMQ's connections dropped while processes were being started)."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from framework import Settings, Stageflow
from framework.broker.base import INNER, Delivery, Outgoing
from framework.errors import BrokerError
from tests.support.cases import CASES, Jumper

pytestmark = pytest.mark.integration


async def test_publish_on_a_closed_channel_is_a_broker_error(settings: Settings) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        await flow.broker.publish([Outgoing(INNER, "m-0", b"{}")])  # the queue is declared (and cached)
        await _close_publish_channels(flow)  # as while reconnecting
        async with asyncio.timeout(10):
            with pytest.raises(BrokerError, match="ChannelInvalidStateError"):
                await flow.broker.publish([Outgoing(INNER, "m-1", b"{}")])


async def test_start_with_a_closed_channel_creates_the_process_and_leaves_it_to_the_relay(
    settings: Settings,
) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        await flow.start(Jumper, {"word": "first"})  # the inner queue is declared (and cached)
        await _close_publish_channels(flow)
        async with asyncio.timeout(10):
            doc = await flow.start(Jumper, {"word": "w"}, client_key="k-1")  # no raw aio-pika error
        stored = await flow.get(doc.process_id)
        assert stored.version == 1 and len(stored.outbox) == 1  # the relay will publish the first stage


async def _close_publish_channels(flow: Stageflow) -> None:
    for channel in flow.broker._publish_channels:  # type: ignore[attr-defined]  # publishes go round-robin
        await channel.close()


async def test_consume_goes_on_when_rabbitmq_closes_the_connection(settings: Settings) -> None:
    """RabbitMQ closes a worker's whole connection when basic.consume meets a quorum queue another worker has
    just declared but not started yet ({error,noproc}); the worker must not die at start-up for that."""
    name = f"stageflow-test-{uuid.uuid4().hex[:8]}"
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await received.put(delivery.body)
        await delivery.ack()

    async with Stageflow.from_settings(settings, cases=CASES, connection_name=name) as flow:
        await _close_connection_on_the_server(name)
        async with asyncio.timeout(30):
            consumer = await flow.broker.consume(INNER, handler, prefetch=1)
            await flow.broker.publish([Outgoing(INNER, "m-after", b"after the reconnect")])
            assert await received.get() == b"after the reconnect"
        await consumer.cancel()


async def test_a_consumer_goes_on_after_rabbitmq_closes_the_connection(settings: Settings) -> None:
    """The consumer reads straight from aiormq, so it must start again itself on the channel connect_robust
    restores (a new aiormq channel): deliveries go on after the reconnect, and their acks are accepted."""
    name = f"stageflow-test-{uuid.uuid4().hex[:8]}"
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await delivery.ack()
        await received.put(delivery.body)

    async with Stageflow.from_settings(settings, cases=CASES, connection_name=name) as flow:
        consumer = await flow.broker.consume(INNER, handler, prefetch=4)
        await flow.broker.publish([Outgoing(INNER, "m-before", b"before")])
        async with asyncio.timeout(10):
            assert await received.get() == b"before"
        await _close_connection_on_the_server(name)
        async with asyncio.timeout(30):
            for n in range(3):
                while True:  # publishing fails while the connection is being restored
                    try:
                        await flow.broker.publish([Outgoing(INNER, f"m-{n}", f"after {n}".encode())])
                        break
                    except BrokerError:
                        await asyncio.sleep(0.2)
            assert sorted([await received.get() for _ in range(3)]) == [b"after 0", b"after 1", b"after 2"]
        await consumer.cancel()
    assert received.empty()  # nothing delivered twice (an ack refused by the restored channel would redeliver)


async def test_a_consumer_whose_queue_is_deleted_declares_it_again_and_goes_on(settings: Settings) -> None:
    """RabbitMQ cancels a consumer whose queue is deleted (basic.cancel); the consumer must not sit idle."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await delivery.ack()
        await received.put(delivery.body)

    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        consumer = await flow.broker.consume(INNER, handler, prefetch=4)
        first_tag = consumer._consuming[1]  # type: ignore[attr-defined, index]
        connection = await aio_pika.connect(settings.broker_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(flow.broker.queue_name(INNER))  # type: ignore[attr-defined]
        async with asyncio.timeout(30):
            # A publish racing the deletion is dropped with the queue: publish once consuming again.
            while (consuming := consumer._consuming) is None or consuming[1] == first_tag:  # type: ignore[attr-defined]
                await asyncio.sleep(0.1)
            await flow.broker.publish([Outgoing(INNER, "m-again", b"again")])
            assert await received.get() == b"again"
        await consumer.cancel()


async def _close_connection_on_the_server(name: str) -> None:
    listing = await _rabbitmqctl("list_connections", "-q", "pid", "client_properties")
    pids = [line.split("\t")[0] for line in listing.splitlines() if name in line]
    assert pids, f"no RabbitMQ connection named {name}: {listing!r}"
    await _rabbitmqctl("close_connection", pids[0], "closed by the test, as by a channel crash")
    await asyncio.sleep(0.5)  # the client notices the close


async def _rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()
