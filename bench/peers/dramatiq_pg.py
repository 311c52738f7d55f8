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

import signal
import threading
from collections.abc import Callable
from typing import Any

from bench.peers.base import BROKER_URL, STAGES, THREADS, ThreadedPgPeer, no_hop, psycopg_hop, worker_args


def build(queue: str, hop: Callable[[int, int], None]) -> tuple[Any, Any]:
    """The broker and the hop actor, the same in driver and workers (the message names actor and queue)."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=BROKER_URL, confirm_delivery=True)
    actor = dramatiq.actor(hop, broker=broker, actor_name="bench_hop", queue_name=queue, max_retries=0)
    return broker, actor


class DramatiqPg(ThreadedPgPeer):
    name = "dramatiq_pg"
    worker_module = "bench.peers.dramatiq_pg"
    queue_separator = "_"  # Dramatiq appends .DQ / .XQ to a queue's name and allows no other '.'

    def connect_driver(self) -> None:
        import dramatiq

        self.broker, self.actor = build(self.queue, no_hop)
        self.pipeline = dramatiq.pipeline

    def start_one(self, chain: int) -> None:
        messages = [self.actor.message_with_options(args=(chain, s), pipe_ignore=True) for s in range(1, STAGES + 1)]
        self.pipeline(messages, broker=self.broker).run()

    def close_driver(self) -> None:
        if getattr(self, "broker", None) is not None:
            self.broker.close()

    def broker_objects(self) -> tuple[list[str], list[str]]:
        return [self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"], []


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
    args = worker_args("bench.peers.dramatiq_pg", "a Dramatiq hop worker")
    work(args.queue, args.schema)


if __name__ == "__main__":
    main()
