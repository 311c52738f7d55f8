"""A small real deployment for tests: N worker subprocesses and a services subprocess on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from framework import ProcessDocument, Settings, Stageflow
from tests.conftest import STORE_URL, settings_env
from tests.support import processes

CASE_MODULES = "tests.support.cases,business_cases"


def services_db_url(settings: Settings) -> str:
    """The services' own tables live in the test's schema (asyncpg passes search_path as a server setting)."""
    return f"{STORE_URL}?search_path={settings.store_schema}"


class Cluster:
    def __init__(
        self, settings: Settings, log_dir: Path, *, workers: int = 2,
        services_modules: tuple[str, ...] = ("tests.support.services",), **env: str,
    ) -> None:
        self.env = settings_env(
            settings, STAGEFLOW_CASES=CASE_MODULES, STAGEFLOW_SERVICES_DB_URL=services_db_url(settings), **env
        )
        self.workers = [processes.worker(i, self.env, log_dir) for i in range(workers)]
        self.services = [
            processes.services(module, self.env, log_dir, name=f"services-{i}")
            for i, module in enumerate(services_modules)
        ]

    def start(self) -> None:
        for proc in (*self.services, *self.workers):
            proc.start()

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
