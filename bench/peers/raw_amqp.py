"""The hand-written aio-pika loop, without and with a database: what a careful developer writes by hand.

Per hop, one message at a time (many in flight, up to the prefetch): consume -> [one committed,
version-checked asyncpg UPDATE] -> publish the next hop (persistent, publisher confirm awaited) -> ack.
The queue is a durable quorum queue, like Stageflow's (``BENCH_RAW_QUEUE_TYPE=classic`` in the driver's
environment makes it a classic one, as Celery's and Dramatiq's are, to see what the queue type costs).
The last hop publishes to a ``done`` queue, which is how the driver learns that a chain finished (so
every hop of this peer publishes one message).

Worker: ``python -m bench.peers.raw_amqp --queue Q --done D --queue-type T [--schema S]`` (with
``--schema``: the UPDATE of :class:`bench.peers.base.ChainTable`; a stale or duplicate hop updates no row
and is acked unpublished).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

import aio_pika
import asyncpg
import orjson

from bench.peers.base import (
    BROKER_URL,
    POOL_SIZE,
    PREFETCH,
    STAGES,
    STORE_URL,
    BenchError,
    ChainTable,
    Peer,
    delete_broker_objects,
)

QUEUE_TYPES = ("quorum", "classic")


def _message(chain: int, stage: int) -> aio_pika.Message:
    return aio_pika.Message(orjson.dumps([chain, stage]), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


class RawAmqp(Peer):
    name = "raw_amqp"
    with_database = False

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.queue = f"{self.namespace}.hops"
        self.done_queue = f"{self.namespace}.done"
        self.table = ChainTable(self.namespace) if self.with_database else None
        self.queue_type = os.environ.get("BENCH_RAW_QUEUE_TYPE", "quorum")
        if self.queue_type not in QUEUE_TYPES:
            raise BenchError(f"BENCH_RAW_QUEUE_TYPE must be one of {QUEUE_TYPES}, not {self.queue_type!r}")
        self.done: set[int] = set()
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None

    async def open(self) -> None:
        self.connection = await aio_pika.connect(BROKER_URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        arguments = {"x-queue-type": self.queue_type}
        await self.channel.declare_queue(self.queue, durable=True, arguments=arguments)
        done = await self.channel.declare_queue(self.done_queue, durable=True, arguments=arguments)
        await done.consume(self._on_done, no_ack=True)
        args = ["--queue", self.queue, "--done", self.done_queue, "--queue-type", self.queue_type]
        if self.table is not None:
            await self.table.create()
            args += ["--schema", self.namespace]
        self.spawn("bench.peers.raw_amqp", args)
        await self.wait_consumers(self.queue)

    async def _on_done(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.done.add(orjson.loads(message.body)[0])

    async def prepare_chains(self, ids: Sequence[int]) -> None:
        if self.table is not None:
            await self.table.insert(ids)

    async def start_chains(self, ids: Sequence[int]) -> None:
        if self.channel is None:
            raise RuntimeError("open() first")
        exchange = self.channel.default_exchange
        for begin in range(0, len(ids), PREFETCH):  # confirms pipelined, PREFETCH at a time
            await asyncio.gather(*(exchange.publish(_message(i, 1), self.queue) for i in ids[begin : begin + PREFETCH]))

    async def count_done(self, ids: Sequence[int]) -> int:
        return sum(1 for i in ids if i in self.done)

    async def cleanup(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        await delete_broker_objects([self.queue, self.done_queue])
        if self.table is not None:
            await self.table.drop()


class RawAmqpPg(RawAmqp):
    name = "raw_amqp_pg"
    with_database = True


async def work(queue_name: str, done_queue: str, queue_type: str, schema: str | None) -> None:
    """One worker process: consume ``queue_name`` until SIGTERM, then finish the hops in flight."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pool = await asyncpg.create_pool(STORE_URL, min_size=1, max_size=POOL_SIZE) if schema else None
    update = ChainTable(schema).update_sql if schema else ""
    connection = await aio_pika.connect(BROKER_URL)
    in_flight: set[asyncio.Task[None]] = set()
    try:
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=PREFETCH)
        publish_channel = await connection.channel(publisher_confirms=True)
        exchange = publish_channel.default_exchange
        queue = await consume_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": queue_type})

        async def hop(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            chain, stage = orjson.loads(message.body)
            if pool is not None and await pool.execute(update, chain, stage) == "UPDATE 0":
                await message.ack()  # stale or duplicate: already done, nothing to publish
                return
            target = done_queue if stage == STAGES else queue_name
            await exchange.publish(_message(chain, stage + 1), target)  # waits for the confirm
            await message.ack()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await hop(message)

        tag = await queue.consume(on_message)
        await stop.wait()
        await queue.cancel(tag)
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
    finally:
        await connection.close()
        if pool is not None:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.raw_amqp", description="a hand-written hop worker")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--done", required=True)
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default="quorum")
    parser.add_argument("--schema", default=None, help="update bench.peers.base.ChainTable in this schema per hop")
    args = parser.parse_args()
    asyncio.run(work(args.queue, args.done, args.queue_type, args.schema))


if __name__ == "__main__":
    main()
