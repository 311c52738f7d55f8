"""Run one worker until SIGTERM/SIGINT, configured from ``STAGEFLOW_*`` environment variables.

On SIGTERM the worker stops consuming, finishes its in-flight transitions, then closes its connections,
so a rolling deploy or ``docker compose down`` loses nothing and leaves nothing half-done.
"""

from __future__ import annotations

import os

from framework.app import Stageflow
from framework.logs import configure_logging
from framework.runner import run_until_signalled
from framework.settings import Settings


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.embedded:
        from framework.errors import ConfigurationError

        raise ConfigurationError(
            "a worker process needs a real broker: the in-memory broker lives inside one process",
            hint="set STAGEFLOW_BROKER_URL=amqp://... (or run `stageflow demo` for the embedded demo)",
        )
    flow = Stageflow.from_settings(settings, connection_name=f"stageflow-worker-{os.getpid()}")
    async with flow:
        worker = flow.worker()
        await run_until_signalled(worker.start, worker.stop)
