"""Celery: a ``chain`` of ``STAGES`` immutable signatures of one task that runs one PostgreSQL UPDATE per hop.

Set up as Celery's docs advise for reliable, fast short tasks: ``task_acks_late`` (ack after the task ran),
``broker_transport_options={"confirm_publish": True}`` (each publish, including the chain's next hop,
waits for the publisher confirm), no result backend (``task_ignore_result``), the ``threads`` pool with
``THREADS`` threads per process (I/O-bound tasks; prefork would give one task at a time per child),
``worker_prefetch_multiplier=4`` (prefetch ``4 x THREADS``), gossip, mingle, heartbeats and remote
control off, a psycopg connection pool of ``THREADS`` per process. Queues are Celery's own (durable classic).

Worker: ``python -m bench.peers.celery_pg --queue Q --schema S`` builds the app here and runs
``app.worker_main``; SIGTERM is Celery's warm shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.peers.base import BROKER_URL, STAGES, THREADS, ChainTable, Peer, delete_broker_objects, psycopg_hop

DRIVER_THREADS = 4  # the driver's threads applying chains (Celery's producer pool is thread-safe)


def build(queue: str, hop: Callable[[int, int], None]) -> tuple[Any, Any]:
    """The app and the hop task, the same in driver and workers (messages name the task and the queue)."""
    from celery import Celery

    app = Celery("bench", broker=BROKER_URL, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        task_ignore_result=True,
        broker_transport_options={"confirm_publish": True},
        worker_prefetch_multiplier=4,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    task = app.task(name="bench_hop", max_retries=0)(hop)
    return app, task


def _no_hop(chain: int, stage: int) -> None:
    raise RuntimeError("the driver never runs hops")


class CeleryPg(Peer):
    name = "celery_pg"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.queue = f"{self.namespace}.hops"
        self.table = ChainTable(self.namespace)
        self.app: Any = None
        self.task: Any = None
        self.executor = ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix="celery-driver")

    async def open(self) -> None:
        await self.table.create()
        self.app, self.task = build(self.queue, _no_hop)
        self.spawn("bench.peers.celery_pg", ["--queue", self.queue, "--schema", self.namespace])
        await self.wait_consumers(self.queue)

    async def prepare_chains(self, ids: Sequence[int]) -> None:
        await self.table.insert(ids)

    def _start(self, chain: int) -> None:
        from celery import chain as celery_chain

        celery_chain(*(self.task.si(chain, s) for s in range(1, STAGES + 1))).apply_async()

    async def start_chains(self, ids: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, self._start, i) for i in ids))

    async def count_done(self, ids: Sequence[int]) -> int:
        return await self.table.count_done(ids)

    async def cleanup(self) -> None:
        self.executor.shutdown(wait=True)
        if self.app is not None:
            await asyncio.to_thread(self.app.close)
        await delete_broker_objects([self.queue], exchanges=[self.queue])
        await self.table.drop()


def work(queue: str, schema: str) -> None:
    hop, pool = psycopg_hop(schema)
    app, _ = build(queue, hop)
    pool.open()
    try:
        app.worker_main(
            [
                "worker", "--pool=threads", f"--concurrency={THREADS}", f"--queues={queue}",
                f"--hostname={queue}-{os.getpid()}@{socket.gethostname()}", "--loglevel=WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]
        )
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.celery_pg", description="a Celery hop worker")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args()
    work(args.queue, args.schema)


if __name__ == "__main__":
    main()
