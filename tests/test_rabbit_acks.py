"""Batched acks on a real RabbitMQ: deliveries that finish out of order are each acked once, and the
channel stays open.

RabbitMQ looks up the exact tag of a ``multiple=True`` ack among the unacked deliveries; naming one that
was acked already is a channel error ("unknown delivery tag") that redelivers every unacked message of
the channel. The batcher once did that whenever a later delivery finished before an earlier one (found
by profiling ``make bench``: a share of all hops ran as redeliveries, one at a time).
"""

from __future__ import annotations

import asyncio

import pytest

from framework import Settings, Stageflow
from framework.broker.base import INNER, Delivery, Outgoing
from tests.support.cases import CASES

pytestmark = pytest.mark.integration


async def test_out_of_order_acks_settle_every_delivery_once_without_closing_the_channel(settings: Settings) -> None:
    async with Stageflow.from_settings(settings, cases=CASES) as flow:
        release = {n: asyncio.Event() for n in range(1, 6)}
        seen: list[tuple[int, bool]] = []  # (message number, redelivered)
        acked: list[int] = []

        async def handler(delivery: Delivery) -> None:
            n = int(delivery.body)
            seen.append((n, delivery.redelivered))
            await release[n].wait()
            await delivery.ack()
            acked.append(n)

        consumer = await flow.broker.consume(INNER, handler, prefetch=10)
        try:
            await flow.broker.publish([Outgoing(INNER, f"m-{n}", str(n).encode()) for n in range(1, 5)])
            async with asyncio.timeout(10):
                while len(seen) < 4:
                    await asyncio.sleep(0.01)
                # 2 first (acked alone: 1 is still running), then 1 (the run 1-2 is now settled), then 4, 3.
                for n in (2, 1, 4, 3):
                    release[n].set()
                    while n not in acked:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # a channel error (and redeliveries) would show by now
                release[5].set()
                await flow.broker.publish([Outgoing(INNER, "m-5", b"5")])
                while 5 not in acked:
                    await asyncio.sleep(0.01)
        finally:
            await consumer.cancel()
        assert seen == [(1, False), (2, False), (3, False), (4, False), (5, False)]
