"""Queues made by an earlier version (dead-lettering through the default exchange, bound to no exchange of
ours) are used as they are: declared passively, bound to the prefix's topic exchange, and their dead letters
still reach the parked queue."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from framework import Settings
from framework.broker.base import INNER, PARKED, Delivery, Outgoing
from framework.broker.rabbitmq import RabbitBroker
from tests.support.ledger import queue_depth

pytestmark = pytest.mark.integration


async def test_queues_of_an_earlier_version_keep_working(settings: Settings) -> None:
    prefix = settings.queue_prefix
    old = await aio_pika.connect(settings.broker_url)
    try:
        channel = await old.channel()
        await channel.declare_queue(f"{prefix}.parked", durable=True, arguments={"x-queue-type": "quorum"})
        for queue in ("inner", "service"):
            await channel.declare_queue(f"{prefix}.{queue}", durable=True, arguments={
                "x-queue-type": "quorum", "x-delivery-limit": 7,  # not this run's limit: kept as it is
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{prefix}.parked"})
    finally:
        await old.close()

    broker = RabbitBroker(settings.broker_url, prefix=prefix, delivery_limit=settings.delivery_limit)
    await broker.connect()  # no PRECONDITION_FAILED: existing queues are declared passively
    try:
        received: asyncio.Queue[Delivery] = asyncio.Queue()
        await broker.consume(INNER, received.put, prefetch=10)
        await broker.publish([Outgoing(INNER, "m-1", b"{}")])  # through the exchange, to the old queue
        async with asyncio.timeout(10):
            delivery = await received.get()
        assert delivery.message_id == "m-1"
        await delivery.nack(requeue=False)  # dead-lettered the old way, through the default exchange
        async with asyncio.timeout(10):
            while await queue_depth(settings.broker_url, f"{prefix}.{PARKED}") < 1:
                await asyncio.sleep(0.1)
    finally:
        await broker.close()
