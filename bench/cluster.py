"""One benchmark deployment: a fresh PostgreSQL schema and RabbitMQ queue prefix, N worker subprocesses
and one services subprocess, all torn down afterwards (also on failure and Ctrl-C)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import aiormq
import asyncpg

from framework import Settings
from tests.support import processes

BROKER_URL = os.environ.get("STAGEFLOW_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
STORE_URL = os.environ.get("STAGEFLOW_TEST_STORE_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret-key-0123456789"
SERVICE_API = "bench_echo"
QUEUE_SUFFIXES = ("inner", "service", "parked", f"command.{SERVICE_API}")


class BenchError(Exception):
    pass


class BenchCluster:
    def __init__(self, workers: int, log_dir: Path, *, broker_url: str = BROKER_URL, store_url: str = STORE_URL):
        self.namespace = f"bench_{uuid.uuid4().hex[:10]}"
        self.settings = Settings(
            broker_url=broker_url,
            store_url=store_url,
            store_schema=self.namespace,
            queue_prefix=self.namespace,
            secret_keys=[SECRET],
            cases=["bench.cases"],
            log_level="WARNING",
        )
        env = dict(os.environ)
        env.update(
            STAGEFLOW_BROKER_URL=broker_url,
            STAGEFLOW_STORE_URL=store_url,
            STAGEFLOW_STORE_SCHEMA=self.namespace,
            STAGEFLOW_QUEUE_PREFIX=self.namespace,
            STAGEFLOW_SECRET_KEYS=SECRET,
            STAGEFLOW_CASES="bench.cases",
            STAGEFLOW_LOG_LEVEL="WARNING",
            # The services' inbox table lands in the bench schema (asyncpg sends search_path as a setting).
            STAGEFLOW_SERVICES_DB_URL=f"{store_url}?search_path={self.namespace}",
        )
        self.workers = [processes.worker(i, env, log_dir) for i in range(workers)]  # PYTHONPATH = repo root
        self.services = processes.services("bench.services", env, log_dir)

    @property
    def all(self) -> list[processes.Managed]:
        return [self.services, *self.workers]

    def start(self) -> None:
        """Start the subprocesses. The schema must exist already (the services' inbox is created in it)."""
        for proc in self.all:
            proc.start()

    async def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Wait until every worker consumes ``inner`` and ``service`` and the service its command queue."""
        began = time.monotonic()
        expected = {
            f"{self.namespace}.inner": len(self.workers),
            f"{self.namespace}.service": len(self.workers),
            f"{self.namespace}.command.{SERVICE_API}": 1,
        }
        connection = await aio_pika.connect(self.settings.broker_url)
        try:
            while True:
                dead = [p for p in self.all if not p.alive]
                if dead:
                    raise BenchError(f"{dead[0].name} exited during start-up:\n{dead[0].log_tail()}")
                counts = {name: await _consumer_count(connection, name) for name in expected}
                if all(counts[name] >= n for name, n in expected.items()):
                    return time.monotonic() - began
                if time.monotonic() - began > timeout_s:
                    raise BenchError(f"workers/services not consuming after {timeout_s:.0f}s: {counts}")
                await asyncio.sleep(0.2)
        finally:
            await connection.close()

    def check_alive(self) -> None:
        dead = [p for p in self.all if not p.alive]
        if dead:
            raise BenchError(f"{dead[0].name} died during the run:\n{dead[0].log_tail()}")

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything (SIGKILL after 15 s); exit codes by name."""
        return {proc.name: proc.stop(timeout_s=15) for proc in self.all}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.all)

    async def drop(self) -> None:
        """Drop the schema and delete the queues. Best effort: reports, never raises."""
        try:
            conn = await asyncpg.connect(self.settings.store_url)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self.namespace} CASCADE")
            finally:
                await conn.close()
        except Exception as exc:  # noqa: BLE001
            print(f"[bench] could not drop schema {self.namespace}: {exc}", file=sys.stderr)
        try:
            amqp = await aio_pika.connect(self.settings.broker_url)
            try:
                channel = await amqp.channel()
                for suffix in QUEUE_SUFFIXES:
                    await channel.queue_delete(f"{self.namespace}.{suffix}")
            finally:
                await amqp.close()
        except Exception as exc:  # noqa: BLE001
            print(f"[bench] could not delete queues {self.namespace}.*: {exc}", file=sys.stderr)


async def _consumer_count(connection: aio_pika.abc.AbstractConnection, name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.consumer_count
    except (aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
        return 0  # not declared yet: its consumer is still starting
    finally:
        if not channel.is_closed:
            await channel.close()
