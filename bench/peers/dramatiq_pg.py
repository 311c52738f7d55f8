"""Dramatiq: a ``pipeline`` of ``STAGES`` messages of one actor that runs one PostgreSQL UPDATE per hop.

Set up as Dramatiq's docs advise for reliability and speed: ``RabbitmqBroker(confirm_delivery=True)``
(each enqueue waits for the publisher confirm), messages acked after the actor ran (Dramatiq's default),
``THREADS`` worker threads per process (queue prefetch ``2 x THREADS``, Dramatiq's default ratio), a psycopg
connection pool of ``THREADS`` per process so no thread waits for a connection, no retries (a failure
must show as an unfinished chain, not a slow one). Queues are Dramatiq's own (durable classic queues).

Worker: ``python -m bench.peers.dramatiq_pg --queue Q --schema S``: a ``dramatiq.Worker`` built here, not
Dramatiq's CLI, so nothing is configured through a global broker at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.peers.base import BROKER_URL, STAGES, THREADS, ChainTable, Peer, delete_broker_objects, psycopg_hop

DRIVER_THREADS = 4  # the driver's threads enqueueing first messages (each has its own confirmed channel)


def build(queue: str, hop: Callable[[int, int], None]) -> tuple[Any, Any]:
    """The broker and the hop actor, the same in driver and workers (the message names actor and queue)."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=BROKER_URL, confirm_delivery=True)
    actor = dramatiq.actor(hop, broker=broker, actor_name="bench_hop", queue_name=queue, max_retries=0)
    return broker, actor


def _no_hop(chain: int, stage: int) -> None:
    raise RuntimeError("the driver never runs hops")


class DramatiqPg(Peer):
    name = "dramatiq_pg"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.queue = f"{self.namespace}_hops"  # Dramatiq's queue names allow no '.' before its suffixes
        self.table = ChainTable(self.namespace)
        self.broker: Any = None
        self.actor: Any = None
        self.executor = ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix="dramatiq-driver")

    async def open(self) -> None:
        import dramatiq

        await self.table.create()
        self.broker, self.actor = build(self.queue, _no_hop)
        self.pipeline = dramatiq.pipeline
        self.spawn("bench.peers.dramatiq_pg", ["--queue", self.queue, "--schema", self.namespace])
        await self.wait_consumers(self.queue)

    async def prepare_chains(self, ids: Sequence[int]) -> None:
        await self.table.insert(ids)

    def _start(self, chain: int) -> None:
        messages = [self.actor.message_with_options(args=(chain, s), pipe_ignore=True) for s in range(1, STAGES + 1)]
        self.pipeline(messages, broker=self.broker).run()

    async def start_chains(self, ids: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, self._start, i) for i in ids))

    async def count_done(self, ids: Sequence[int]) -> int:
        return await self.table.count_done(ids)

    async def cleanup(self) -> None:
        self.executor.shutdown(wait=True)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.close)
        await delete_broker_objects([self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"])
        await self.table.drop()


def work(queue: str, schema: str) -> None:
    """One worker process: run hops until SIGTERM, then let Dramatiq finish what it holds."""
    from dramatiq import Worker

    hop, pool = psycopg_hop(schema)
    broker, _ = build(queue, hop)
    pool.open()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    worker = Worker(broker, worker_threads=THREADS)
    worker.start()
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        worker.stop()
        broker.close()
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.dramatiq_pg", description="a Dramatiq hop worker")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args()
    work(args.queue, args.schema)


if __name__ == "__main__":
    main()
