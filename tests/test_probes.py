"""The probes Kubernetes asks (deploy/k8s/): a real worker subprocess and a real services subprocess on RabbitMQ +
PostgreSQL, watched through ``/healthz`` and ``/readyz`` on ``STAGEFLOW_METRICS_PORT`` across their lifecycle.

Readiness means consuming: not while a worker is still starting (held here on a locked schedule row, with its
store and broker connected), nor once SIGTERM has made it drain; and not while its store, broker or (a services
process) inbox database fails to answer. Liveness means the event loop answers: not while a stage blocks it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from framework import Settings, Stageflow, Status
from tests.conftest import settings_env
from tests.support import processes
from tests.support.cluster import services_db_url, wait_finished
from tests.support.probe_cases import CASES, SCHEDULE
from tests.support.servers import BROKER_URL, STORE_URL
from tests.test_worker_metrics import free_port, scrape, value

pytestmark = pytest.mark.integration

PROBE_TIMEOUT_S = 0.5  # shorter than the blocking stage, as a liveness probe's timeoutSeconds is


async def consumers(prefix: str, suffix: str) -> int:
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.{suffix}", passive=True)
        return int(queue.declaration_result.consumer_count)


async def status_of(http: httpx.AsyncClient, path: str) -> int | None:
    """The HTTP status, or None when nothing answered within the probe's timeout (or nothing listens yet)."""
    try:
        return (await http.get(path, timeout=PROBE_TIMEOUT_S)).status_code
    except httpx.TransportError:
        return None


async def until(http: httpx.AsyncClient, path: str, wanted: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await status_of(http, path) == wanted:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_worker_is_ready_only_while_it_consumes_and_alive_while_its_loop_answers(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = settings_env(settings, STAGEFLOW_CASES="tests.support.probe_cases", STAGEFLOW_METRICS_PORT=str(port),
                       STAGEFLOW_METRICS_HOST="127.0.0.1")
    worker = processes.worker(0, env, tmp_path)
    async with Stageflow.from_settings(settings, cases=CASES) as flow, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await flow.engine.schedules.sync()  # the schedule row exists; a starting worker writes it again
        lock = await asyncpg.connect(STORE_URL)
        held = lock.transaction()
        await held.start()
        await lock.execute(f"SELECT 1 FROM {settings.store_schema}.schedules WHERE name = $1 FOR UPDATE", SCHEDULE)
        worker.start()
        try:
            # 1. Starting: store and broker connected, the worker waits on the row, nothing consumes yet.
            assert await until(http, "/healthz", 200, 30), worker.log_tail()
            for _ in range(10):
                assert await status_of(http, "/readyz") == 503, worker.log_tail()
                await asyncio.sleep(0.1)
            assert await consumers(settings.queue_prefix, "inner") == 0
            await held.rollback()
            assert await until(http, "/readyz", 200, 30), worker.log_tail()
            assert await consumers(settings.queue_prefix, "inner") == 1
            assert await consumers(settings.queue_prefix, "service") == 1
            assert await consumers(settings.queue_prefix, "command.http") == 1  # the hosted HTTP adapter

            # 2. A stage blocks the event loop for 2 s: liveness gets no answer, then answers again.
            blocking = await flow.start("probe_blocking", {"seconds": 2.0})
            assert await until(http, "/healthz", None, 10), "the liveness probe answered while the loop was blocked"
            assert await until(http, "/healthz", 200, 10), worker.log_tail()
            assert [d.status for d in await wait_finished(flow, [blocking.process_id], 10)] == [Status.COMPLETED]

            # 3. SIGTERM while a 3 s transition is in flight: not ready, still alive, the transition completes.
            slow = await flow.start("probe_slow", {"seconds": 3.0})
            for _ in range(100):
                if value(scrape((await http.get("/metrics")).text), "stageflow_messages_in_flight") == 1:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"the slow transition never started\n{worker.log_tail()}")
            worker.signal(signal.SIGTERM)
            assert await until(http, "/readyz", 503, 2), worker.log_tail()
            draining = (await flow.get(slow.process_id)).status
            assert draining in (Status.RUNNING, Status.WAITING), "the transition finished before the drain was seen"
            assert await status_of(http, "/healthz") == 200
            assert await asyncio.to_thread(worker.proc.wait, 30) == 0, worker.log_tail()  # type: ignore[union-attr]
            assert (await flow.get(slow.process_id)).status == Status.COMPLETED
        finally:
            await lock.close()
            worker.stop()


@pytest.fixture
async def inbox_role(settings: Settings, pg: asyncpg.Connection) -> AsyncIterator[str]:
    """A PostgreSQL role of the test's own for the services' inbox, in the test's schema; dropped afterwards."""
    role = f"{settings.store_schema}_svc"
    await pg.execute(f"CREATE SCHEMA IF NOT EXISTS {settings.store_schema}")
    await pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'probe-password'")
    await pg.execute(f"GRANT USAGE, CREATE ON SCHEMA {settings.store_schema} TO {role}")
    try:
        yield role
    finally:
        await pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        await pg.execute(f"DROP OWNED BY {role}")
        await pg.execute(f"DROP ROLE {role}")


async def test_a_services_process_is_ready_only_while_it_consumes_and_its_inbox_answers(
    settings: Settings, tmp_path: Path, pg: asyncpg.Connection, inbox_role: str
) -> None:
    port = free_port()
    host = STORE_URL.split("@", 1)[1]  # host:port/database, then the test role's credentials
    db_url = services_db_url(settings).replace(STORE_URL, f"postgresql://{inbox_role}:probe-password@{host}")
    env = settings_env(settings, STAGEFLOW_SERVICES_DB_URL=db_url, STAGEFLOW_METRICS_PORT=str(port),
                       STAGEFLOW_METRICS_HOST="127.0.0.1")
    services = processes.services("tests.support.services", env, tmp_path)
    async with Stageflow.from_settings(settings, cases=CASES), \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:  # the flow makes the queues
        services.start()
        try:
            assert await until(http, "/readyz", 200, 30), services.log_tail()
            assert await consumers(settings.queue_prefix, "command.effects") == 1
            # The database refuses the role (as when its credentials are revoked) and drops its sessions.
            await pg.execute(f"ALTER ROLE {inbox_role} NOLOGIN")
            await pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{inbox_role}'")
            assert await until(http, "/readyz", 503, 10), services.log_tail()
            assert await status_of(http, "/healthz") == 200
            await pg.execute(f"ALTER ROLE {inbox_role} LOGIN")
            assert await until(http, "/readyz", 200, 10), services.log_tail()
            services.signal(signal.SIGTERM)
            assert await asyncio.to_thread(services.proc.wait, 30) == 0, services.log_tail()  # type: ignore[union-attr]
        finally:
            services.stop()
