"""A small real deployment for tests: N worker subprocesses and a services subprocess on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

import aio_pika

from framework import ProcessDocument, Settings, Stageflow
from tests.conftest import STORE_URL, settings_env
from tests.support import processes
from tests.support.servers import connect_broker

CASE_MODULES = "tests.support.cases,tests.support.failure_cases,tests.support.fanout_cases,business_cases"


def services_db_url(settings: Settings) -> str:
    """The services' own tables live in the test's schema (asyncpg passes search_path as a server setting)."""
    url = settings.store_url if settings.store_url.startswith("postgres") else STORE_URL
    return f"{url}{'&' if '?' in url else '?'}search_path={settings.store_schema}"


class Cluster:
    def __init__(
        self, settings: Settings, log_dir: Path, *, workers: int = 2,
        services_modules: tuple[str, ...] = ("tests.support.services",), cases: str = CASE_MODULES,
        admin_url: str | None = None, http_adapters: int = 0, adapter_env: dict[str, str] | None = None,
        **env: str,
    ) -> None:
        self.admin_url = admin_url or settings.broker_url  # where wait_ready counts consumers (its first live node)
        self.env = settings_env(
            settings, STAGEFLOW_CASES=cases, STAGEFLOW_SERVICES_DB_URL=services_db_url(settings), **env
        )
        if http_adapters:  # `stageflow http-adapter` processes serve `http`; the workers then do not
            self.env["STAGEFLOW_HTTP_ADAPTER"] = "false"
        self.prefix = settings.queue_prefix
        self.apis = [api for module in services_modules for api in importlib.import_module(module).HANDLERS]
        self.workers = [processes.worker(i, self.env, log_dir) for i in range(workers)]
        self.services = [
            processes.services(module, self.env, log_dir, name=f"services-{i}")
            for i, module in enumerate(services_modules)
        ]
        if http_adapters:
            self.apis.append("http")
        self.adapter_env = {**self.env, **(adapter_env or {})}  # e.g. the API secrets: in the adapters only
        self.services += [processes.http_adapter(self.adapter_env, log_dir, name=f"http-adapter-{i}")
                          for i in range(http_adapters)]

    async def start(self, *, wait_ready: bool = True) -> None:
        for proc in (*self.services, *self.workers):
            proc.start()
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every worker and service consumes its queues (so a test never races start-up)."""
        expected = {"inner": len(self.workers), "service": len(self.workers)}
        expected.update({f"command.{api}": 1 for api in self.apis})
        deadline = time.monotonic() + timeout_s
        async with await connect_broker(self.admin_url) as connection:
            while True:
                counts = {}
                for suffix in expected:
                    channel = await connection.channel()
                    try:
                        queue = await channel.declare_queue(f"{self.prefix}.{suffix}", passive=True)
                        counts[suffix] = queue.declaration_result.consumer_count
                    except aio_pika.exceptions.ChannelClosed:
                        counts[suffix] = 0  # not declared yet
                    finally:
                        if not channel.is_closed:
                            await channel.close()
                if all(counts[k] >= n for k, n in expected.items()):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster not ready: consumers {counts}, expected {expected}\n{self.logs()}")
                await asyncio.sleep(0.1)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything; the exit codes by name (0 means a clean shutdown)."""
        return {proc.name: proc.stop() for proc in (*self.workers, *self.services)}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in (*self.workers, *self.services))


async def wait_finished(flow: Stageflow, process_ids: list[str], timeout_s: float) -> list[ProcessDocument]:
    """Poll until every process is completed, failed or cancelled (or the time is up); return the documents."""
    deadline = time.monotonic() + timeout_s
    while True:
        docs = [await flow.get(pid) for pid in process_ids]
        if all(d.status.finished for d in docs) or time.monotonic() > deadline:
            return docs
        await asyncio.sleep(0.2)
