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

import os
import socket
from collections.abc import Callable
from typing import Any

from bench.peers.base import BROKER_URL, STAGES, THREADS, ThreadedPgPeer, no_hop, psycopg_hop, worker_args


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


class CeleryPg(ThreadedPgPeer):
    name = "celery_pg"
    worker_module = "bench.peers.celery_pg"

    def connect_driver(self) -> None:
        from celery import chain

        self.app, self.task = build(self.queue, no_hop)
        self.chain = chain

    def start_one(self, chain: int) -> None:
        self.chain(*(self.task.si(chain, s) for s in range(1, STAGES + 1))).apply_async()

    def close_driver(self) -> None:
        if getattr(self, "app", None) is not None:
            self.app.close()

    def broker_objects(self) -> tuple[list[str], list[str]]:
        return [self.queue], [self.queue]  # Celery declares a direct exchange named after the queue


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
    args = worker_args("bench.peers.celery_pg", "a Celery hop worker")
    work(args.queue, args.schema)


if __name__ == "__main__":
    main()
