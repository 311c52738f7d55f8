"""What every system in the comparison shares: the contract a peer implements, its worker subprocesses,
the chain table the PostgreSQL peers update, and the broker checks and clean-up.

A peer runs ``STAGES``-hop chains of no-op stages. Chains are numbered by the harness; a peer starts a
batch of them (``start_chains``) and says how many of a batch have finished (``count_done``). Everything
a peer creates lives under its own ``namespace`` (a PostgreSQL schema, queue names) and is removed by
``close`` — also after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import aio_pika
import aiormq
import asyncpg

from tests.support.processes import Managed
from tests.support.servers import BROKER_URL, STORE_URL, connect_broker

STAGES = 5
PREFETCH = 64  # per worker process for the hand-written loops (their best: 128 was slower), and starts in flight
THREADS = 16  # per worker process for the thread-based peers (Dramatiq, Celery)
DRIVER_THREADS = 4  # the driver's threads starting chains with a synchronous client (Celery, Dramatiq)
POOL_SIZE = 10  # PostgreSQL connections per worker process: Stageflow's default store_pool_size


class BenchError(Exception):
    """The benchmark could not measure (a worker died, a chain did not finish, a server is missing)."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Peer(ABC):
    """One system under comparison, deployed for one measured run: ``async with Peer(...) as peer``."""

    name: str
    broker_url: str = BROKER_URL  # where its workers consume (a cluster's peer lists every node)

    def __init__(self, log_dir: Path, workers: int) -> None:
        self.namespace = f"bench_{uuid.uuid4().hex[:10]}"
        self.log_dir = log_dir
        self.worker_count = workers
        self.processes: list[Managed] = []

    async def __aenter__(self) -> Peer:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            say(f"[bench] {self.name} failed; worker logs:\n{self.logs()}")
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Create queues/tables, start the worker subprocesses, return once they all consume."""

    async def prepare_chains(self, ids: Sequence[int]) -> None:  # noqa: B027 - optional: most peers need nothing
        """Before the measured window: whatever must exist for these chains (e.g. their table rows)."""

    @abstractmethod
    async def start_chains(self, ids: Sequence[int]) -> None:
        """Start one chain per id (returns once every first message is published and confirmed)."""

    @abstractmethod
    async def count_done(self, ids: Sequence[int]) -> int:
        """How many of these chains have run their last stage."""

    @abstractmethod
    async def cleanup(self) -> None:
        """Drop what ``open`` created (queues, schema). Best effort: reports, never raises."""

    async def close(self) -> None:
        codes = await asyncio.to_thread(stop_all, self.processes, 15.0)
        unclean = {name: code for name, code in codes.items() if code not in (0, None)}
        if unclean:
            say(f"[bench] {self.name}: unclean worker exits {unclean}")
        await self.cleanup()

    def spawn(self, module: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``self.worker_count`` subprocesses running ``python -m module args``."""
        metrics_port = os.environ.get("BENCH_METRICS_PORT")  # Stageflow's metrics on: one port per worker
        for i in range(self.worker_count):
            environment = {**os.environ, **(env or {})}
            if metrics_port:
                environment["STAGEFLOW_METRICS_PORT"] = str(int(metrics_port) + i)
            proc = Managed(f"{self.name}-worker-{i}", ["-m", module, *args], environment, self.log_dir)
            self.processes.append(proc)
            proc.start()

    def check_alive(self) -> None:
        dead = [p for p in self.processes if not p.alive]
        if dead:
            raise BenchError(f"{dead[0].name} exited:\n{dead[0].log_tail()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)

    async def wait_consumers(self, queue: str, timeout_s: float = 60.0) -> None:
        """Wait until every worker consumes ``queue`` (start-up is never measured)."""
        began = time.monotonic()
        connection = await connect_broker(self.broker_url)
        try:
            while (count := await consumer_count(connection, queue)) < self.worker_count:
                self.check_alive()
                if time.monotonic() - began > timeout_s:
                    raise BenchError(
                        f"{self.name}: {count}/{self.worker_count} workers consume {queue} after {timeout_s:.0f}s"
                    )
                await asyncio.sleep(0.2)
        finally:
            await connection.close()


class ThreadedPgPeer(Peer):
    """A peer with a synchronous client (Celery, Dramatiq): the driver starts chains from ``DRIVER_THREADS``
    threads; workers (``python -m <worker_module> --queue Q --schema S``) update the ChainTable per hop,
    and a chain is done when its row is."""

    worker_module: str
    queue_separator = "."

    def __init__(self, log_dir: Path, workers: int) -> None:
        super().__init__(log_dir, workers)
        self.queue = f"{self.namespace}{self.queue_separator}hops"
        self.table = ChainTable(self.namespace)
        self.executor = ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix=f"{self.name}-driver")

    @abstractmethod
    def connect_driver(self) -> None:
        """Build the client the driver starts chains with (the library's broker or app object)."""

    @abstractmethod
    def start_one(self, chain: int) -> None:
        """Start one chain (blocking: runs in a driver thread)."""

    @abstractmethod
    def close_driver(self) -> None:
        """Close the client's connections (blocking)."""

    @abstractmethod
    def broker_objects(self) -> tuple[list[str], list[str]]:
        """The queues and exchanges the library declared for ``self.queue``."""

    async def open(self) -> None:
        await self.table.create()
        self.connect_driver()
        self.spawn(self.worker_module, ["--queue", self.queue, "--schema", self.namespace])
        await self.wait_consumers(self.queue)

    async def prepare_chains(self, ids: Sequence[int]) -> None:
        await self.table.insert(ids)

    async def start_chains(self, ids: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, self.start_one, i) for i in ids))

    async def count_done(self, ids: Sequence[int]) -> int:
        return await self.table.count_done(ids)

    async def cleanup(self) -> None:
        self.executor.shutdown(wait=True)
        await asyncio.to_thread(self.close_driver)
        await delete_broker_objects(*self.broker_objects())
        await self.table.drop()


def no_hop(chain: int, stage: int) -> None:
    """The hop as the driver declares it: the driver only sends messages, it never runs hops."""
    raise RuntimeError("the driver never runs hops")


def worker_args(module: str, description: str) -> argparse.Namespace:
    """``--queue`` and ``--schema``: what the thread-based peers' workers are told on their command line."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--schema", required=True, help="the schema of the ChainTable each hop updates")
    return parser.parse_args()


def stop_all(processes: Sequence[Managed], timeout_s: float) -> dict[str, int | None]:
    """SIGTERM every process at once (some peers take seconds to shut down), wait, SIGKILL stragglers."""
    for proc in processes:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for proc in processes:
        if proc.proc is not None:
            try:
                proc.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        codes[proc.name] = None if proc.proc is None else proc.proc.returncode
    return codes


async def consumer_count(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count
    except (aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
        return 0  # not declared yet: its consumer is still starting
    finally:
        if not channel.is_closed:
            await channel.close()


async def delete_broker_objects(
    queues: Sequence[str], exchanges: Sequence[str] = (), *, broker_url: str = BROKER_URL
) -> None:
    """Delete queues and exchanges; reports, never raises."""
    try:
        connection = await connect_broker(broker_url)
        try:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()
    except Exception as exc:  # noqa: BLE001
        say(f"[bench] could not delete {', '.join([*queues, *exchanges])}: {exc}")


async def drop_schema(schema: str) -> None:
    """Drop a PostgreSQL schema; reports, never raises."""
    try:
        conn = await asyncpg.connect(STORE_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
    except Exception as exc:  # noqa: BLE001
        say(f"[bench] could not drop schema {schema}: {exc}")


def psycopg_hop(schema: str) -> tuple[Callable[[int, int], None], Any]:
    """For the thread-based peers: a hop function running ChainTable's UPDATE (autocommit: one committed
    statement) through psycopg, and its connection pool of ``THREADS`` (open it before the first hop)."""
    from psycopg_pool import ConnectionPool  # only in .bench-venv

    pool = ConnectionPool(STORE_URL, min_size=1, max_size=THREADS, kwargs={"autocommit": True}, open=False)
    update = ChainTable(schema).update_sql.replace("$1", "%(chain)s").replace("$2", "%(stage)s")

    def hop(chain: int, stage: int) -> None:
        with pool.connection() as conn:
            conn.execute(update, {"chain": chain, "stage": stage})

    return hop, pool


class ChainTable:
    """``<schema>.chains(id, version)``: one row per chain, which each hop moves from ``stage - 1`` to
    ``stage`` with one committed, version-checked UPDATE (``UPDATE_SQL``). A chain is done at ``STAGES``."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.conn: asyncpg.Connection | None = None

    @property
    def update_sql(self) -> str:
        """Parameters: chain id, stage (1..STAGES). Touches no row if the hop is stale or a duplicate."""
        return f"UPDATE {self.schema}.chains SET version = $2 WHERE id = $1 AND version = $2 - 1"

    async def create(self) -> None:
        self.conn = await asyncpg.connect(STORE_URL)
        await self.conn.execute(
            f"CREATE SCHEMA {self.schema}; CREATE TABLE {self.schema}.chains (id int PRIMARY KEY, version int NOT NULL)"
        )

    def _connection(self) -> asyncpg.Connection:
        if self.conn is None:
            raise BenchError("ChainTable.create() was not called")
        return self.conn

    async def insert(self, ids: Sequence[int]) -> None:
        await self._connection().copy_records_to_table("chains", schema_name=self.schema, records=[(i, 0) for i in ids])

    async def count_done(self, ids: Sequence[int]) -> int:
        return await self._connection().fetchval(
            f"SELECT count(*) FROM {self.schema}.chains WHERE id = ANY($1) AND version = $2", list(ids), STAGES
        )

    async def drop(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        await drop_schema(self.schema)
