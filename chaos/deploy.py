"""One scenario's deployment: a fresh schema and queue prefix, the driver's own ``Stageflow`` (to start
processes and inject messages), the ledger trigger, worker and services subprocesses (``tests/support``'s
``Cluster`` and ``Managed``), a supervisor that restarts dead workers, and the teardown that removes it
all again (also on failure and Ctrl-C). It runs on the tests' RabbitMQ and PostgreSQL, or on the ``Servers``
a scenario started for itself (a RabbitMQ cluster, whose URL lists every node; a PostgreSQL pair)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg

from chaos.cases import CASES, EFFECTS_API
from framework import Settings, Stageflow
from framework.broker.base import REASON_HEADER, SOURCE_HEADER
from framework.errors import InfrastructureError
from framework.store.sql.pg_connection import TRANSIENT_ERRORS, connect
from tests.support.cluster import Cluster
from tests.support.ledger import install_ledger, queue_depth
from tests.support.processes import Managed
from tests.support.servers import BROKER_URL, STORE_URL, connect_broker, drop_namespace  # the tests' servers

if TYPE_CHECKING:
    from tests.support.pg_ha import PgHa
    from tests.support.rabbit_cluster import RabbitCluster

SECRET = "chaos-secret-key-0123456789-abcdefghijklmnop"  # 32 bytes at least
CASE_MODULES = "chaos.cases"
QUEUE_SUFFIXES = ("inner", "service", "parked", f"command.{EFFECTS_API}", "command.http")  # http: served by each worker
FINISHED = ("completed", "failed", "cancelled")
_DB_ERRORS = TRANSIENT_ERRORS  # the framework's: unreachable, restarting, or failing over


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def with_query(url: str, **params: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


@dataclass(frozen=True)
class Servers:
    """Where a deployment runs: the tests' servers, or those a scenario started (and handles to fault them)."""

    broker_url: str = BROKER_URL  # one node, or every node of a cluster, comma-separated
    store_url: str = STORE_URL
    rabbit: RabbitCluster | None = None
    pg: PgHa | None = None


class Deployment:
    def __init__(self, name: str, log_root: Path, *, workers: int, overrides: dict[str, Any] | None = None,
                 servers: Servers | None = None) -> None:
        """``overrides``: settings (``Settings`` field names) for the driver and every subprocess alike."""
        overrides = overrides or {}
        self.name = name
        self.servers = servers or Servers()
        self.namespace = f"chaos_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            broker_url=self.servers.broker_url,
            store_url=self.servers.store_url,
            store_schema=self.namespace,
            queue_prefix=self.namespace,
            secret_keys=[SECRET],
            # The relay re-publishes an outbox that may have been lost (the publish failed while RabbitMQ was
            # down, or the driver died right after start()); short, so such processes finish within the drain.
            **{"relay_grace_s": 5.0,
               "timer_interval_s": 0.25,  # the due-work loop: retry timers, overdue outboxes
               "log_level": "WARNING",
               "store_pool_size": 4,  # several subprocesses share PostgreSQL's connection limit
               **overrides},
        )
        env = {f"STAGEFLOW_{key.upper()}": str(value) for key, value in overrides.items()}
        self.log_dir = log_root / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(self.settings, self.log_dir, workers=workers, cases=CASE_MODULES, **env)
        self.flow = Stageflow.from_settings(self.settings, cases=CASES, connection_name=f"stageflow-chaos-{name}")
        self.process_ids: list[str] = []
        self._pending: list[tuple[str, dict[str, Any], str]] = []  # what ``feed`` has yet to start
        self._pool: asyncpg.Pool | None = None  # the driver's own queries (the feeder and the checks run at once)
        self._opened = False
        self._supervisors: list[Supervisor] = []

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        return self.namespace

    @property
    def services(self) -> Managed:
        return self.cluster.services[0]

    def add_worker(self, name: str, **env: str) -> Managed:
        """One more worker with its own environment (e.g. a short heartbeat, DEBUG logs)."""
        worker = Managed(name, ["-m", "workers"], {**self.cluster.env, **env}, self.log_dir)
        self.cluster.workers.append(worker)
        return worker

    async def open(self) -> None:
        await self.flow.open()  # creates the schema and the queues
        self._opened = True
        await self.execute(lambda c: install_ledger(c, self.schema))

    async def boot(self, timeout_s: float = 60.0) -> None:
        """Start the services and workers and wait until each consumes its queues."""
        await self.cluster.start(wait_ready=False)
        await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        await self.cluster.wait_ready(timeout_s)

    def supervise(self, procs: Sequence[Managed]) -> Supervisor:
        """Restart any of ``procs`` that dies (counting the deaths) until the teardown."""
        supervisor = Supervisor(procs)
        supervisor.start()
        self._supervisors.append(supervisor)
        return supervisor

    async def teardown(self) -> list[str]:
        """Stop the subprocesses (supervisors first, so nothing restarts them), close the driver, drop
        the schema and queues. Never raises."""
        problems: list[str] = []
        for supervisor in self._supervisors:
            await supervisor.stop()
        codes = await asyncio.to_thread(stop_all, [*self.cluster.workers, *self.cluster.services])
        unclean = {name: code for name, code in codes.items() if code not in (0, None)}
        if unclean:
            problems.append(f"unclean exits on SIGTERM: {unclean}")
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except Exception:  # noqa: BLE001
                self._pool.terminate()
        if self._opened:
            try:
                await asyncio.wait_for(self.flow.close(), 15)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"closing the driver: {exc}")
        deadline = time.monotonic() + 60
        while True:
            try:
                await drop_namespace(self.namespace, QUEUE_SUFFIXES, broker_url=self.settings.broker_url,
                                     store_url=self.settings.store_url)
                break
            except Exception as exc:  # noqa: BLE001 - the servers may still be coming back
                if time.monotonic() > deadline:
                    problems.append(f"could not drop {self.namespace} (schema/queues): {exc}")
                    break
                await asyncio.sleep(2)
        return problems

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path})\n{p.log_tail(lines)}"
                         for p in (*self.cluster.workers, *self.cluster.services))

    # -- the driver's database connection, re-opened after a PostgreSQL restart -------------------------

    async def execute(
        self, action: Callable[[asyncpg.Connection], Awaitable[Any]], *, retry_for_s: float = 90.0
    ) -> Any:
        """Run ``action`` on a pooled connection, retried while PostgreSQL is unreachable (restarting)."""
        deadline = time.monotonic() + retry_for_s
        while True:
            try:
                if self._pool is None:
                    self._pool = await asyncio.wait_for(  # the framework's connect: a host at a time
                        asyncpg.create_pool(self.settings.store_url, min_size=0, max_size=4, connect=connect), 10)
                async with self._pool.acquire() as conn:
                    return await asyncio.wait_for(action(conn), 60)
            except _DB_ERRORS:
                if self._pool is not None:
                    await self._pool.expire_connections()  # after a restart every pooled connection is dead
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.execute(lambda c: c.fetchval(sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.execute(lambda c: c.fetch(sql, *args))

    async def unfinished(self) -> int:
        return await self.fetchval(
            f"SELECT count(*) FROM {self.schema}.processes WHERE status <> ALL($1::text[])", list(FINISHED))

    async def finished(self) -> int:
        return await self.fetchval(
            f"SELECT count(*) FROM {self.schema}.processes WHERE status = ANY($1::text[])", list(FINISHED))

    async def transitions(self) -> int:
        """History rows: one per process start and one per committed transition."""
        return await self.fetchval(f"SELECT count(*) FROM {self.schema}.history")

    async def wait_finished(self, timeout_s: float, *, progress: str | None = None) -> bool:
        """Poll until every started process is finished; False if ``timeout_s`` ran out."""
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while True:
            done = await self.finished()
            if done >= len(self.process_ids):
                return True
            now = time.monotonic()
            if progress and now - last > 10:
                say(f"[chaos] {progress}: {done}/{len(self.process_ids)} finished")
                last = now
            if now > deadline:
                return False
            await asyncio.sleep(0.25)

    # -- starting processes ---------------------------------------------------------------------------

    async def start(self, case: str, input: dict[str, Any], key: str) -> str:
        """Start one process; retried through store/broker outages (the client key makes a retry safe)."""
        delay = 0.2
        deadline = time.monotonic() + 120
        while True:
            try:
                doc = await self.flow.start(case, input, client_key=key)
                break
            except InfrastructureError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.process_ids.append(doc.process_id)
        return doc.process_id

    async def start_many(self, items: Sequence[tuple[str, dict[str, Any], str]], *, concurrency: int = 16) -> list[str]:
        limit = asyncio.Semaphore(concurrency)

        async def one(item: tuple[str, dict[str, Any], str]) -> str:
            async with limit:
                return await self.start(*item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def feed(self, items: Sequence[tuple[str, dict[str, Any], str]], *, in_flight: int,
                   held_back: Callable[[], int] = lambda: 0) -> None:
        """Start ``items`` keeping about ``in_flight`` processes unfinished; ``held_back()`` items are kept
        for later (``start_next``) while it is positive."""
        queue = self._pending = list(items)
        while queue:
            budget = len(queue) - held_back()
            unfinished = await self.unfinished()
            room = in_flight - unfinished
            if budget > 0 and room > 0:
                take = min(budget, room, 32)
                batch = queue[:take]
                del queue[:take]
                await self.start_many(batch)
            else:
                await asyncio.sleep(0.05)

    async def start_next(self, count: int) -> None:
        """Start ``count`` of the items ``feed`` still holds (e.g. right before a fault)."""
        batch = self._pending[:count]
        del self._pending[:count]
        await self.start_many(batch)

    # -- RabbitMQ -------------------------------------------------------------------------------------

    def queue(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    async def consumers(self, suffix: str) -> int:
        connection = await connect_broker(self.settings.broker_url)
        try:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(self.queue(suffix), passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0
            return queue.declaration_result.consumer_count or 0
        finally:
            await connection.close()

    async def parked_depth(self) -> int:
        return await queue_depth(self.settings.broker_url, self.queue("parked"))

    async def wait_parked(self, expected: int, timeout_s: float) -> int:
        """Wait until at least ``expected`` messages are parked (or the time is up); the depth then."""
        deadline = time.monotonic() + timeout_s
        while True:
            depth = await self.parked_depth()
            if depth >= expected or time.monotonic() > deadline:
                return depth
            await asyncio.sleep(0.2)

    async def take_parked(self) -> list[Parked]:
        """Take every parked message off the queue."""
        parked: list[Parked] = []
        connection = await connect_broker(self.settings.broker_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.queue("parked"), passive=True)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                headers = message.headers or {}
                reason = headers.get(REASON_HEADER)
                if reason is None:  # dead-lettered by RabbitMQ itself (x-delivery-limit), not by Stageflow
                    reason = f"rabbitmq: {headers.get('x-first-death-reason', '?')}"
                source = headers.get(SOURCE_HEADER) or str(headers.get("x-first-death-queue", "?")).split(".")[-1]
                parked.append(Parked(str(reason), str(source), message.body))
        finally:
            await connection.close()
        return parked


@dataclass(frozen=True)
class Parked:
    reason: str  # x-stageflow-reason, or "rabbitmq: <x-first-death-reason>" if RabbitMQ dead-lettered it
    source: str  # the logical queue it came from
    body: bytes


class Supervisor:
    """Restarts workers that died (as a process supervisor would) and counts the deaths."""

    def __init__(self, workers: Sequence[Managed], interval_s: float = 0.1) -> None:
        self.workers = workers
        self.interval_s = interval_s
        self.deaths: list[tuple[str, int | None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos-supervisor")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            for worker in self.workers:
                if worker.proc is not None and not worker.alive:
                    self.deaths.append((worker.name, worker.proc.returncode))
                    worker.start()
            await asyncio.sleep(self.interval_s)



def stop_all(procs: Sequence[Managed], timeout_s: float = 20.0) -> dict[str, int | None]:
    """SIGTERM every process at once (SIGCONT first: a stopped one cannot act on it), wait for them to
    exit, SIGKILL what is left after ``timeout_s``; exit codes by name. One SIGTERM each: a second one
    could land after a worker's graceful stop removed its handler, and kill it."""
    for proc in procs:
        proc.signal(signal.SIGCONT)
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for proc in procs:
        if proc.proc is None:
            codes[proc.name] = None
            continue
        try:
            proc.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.proc.kill()
            proc.proc.wait(10)
        codes[proc.name] = proc.proc.returncode
    return codes


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end. Its own exception is not raised here (whoever awaited it
    got it); a cancellation of the caller still propagates."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


def shuffled(items: list[Any], rng: random.Random) -> list[Any]:
    items = list(items)
    rng.shuffle(items)
    return items
