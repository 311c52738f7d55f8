"""The worker process: run one worker until SIGTERM/SIGINT, configured from ``STAGEFLOW_*`` settings.

This is what ``stageflow worker`` (and ``python -m workers``) runs. Unless ``STAGEFLOW_HTTP_ADAPTER=false``,
the worker also serves the built-in ``http`` service (API calls from stages and blueprints), so no extra
process is needed for them.

On SIGTERM the worker stops consuming, finishes its in-flight transitions, then closes its connections,
so a rolling deploy or ``docker compose down`` loses nothing and leaves nothing half-done.
"""

from __future__ import annotations

import os

from framework.app import Stageflow
from framework.errors import ConfigurationError
from framework.http import hosted_http_adapter
from framework.logs import configure_logging
from framework.loops import settle_garbage_collector
from framework.metrics import WorkerMetrics
from framework.metrics_server import MetricsServer, Readiness
from framework.runner import run_until_signalled
from framework.settings import Settings
from framework.telemetry import tracing_from_environment


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.embedded:
        raise ConfigurationError(
            "a worker process needs a real broker: the in-memory broker lives inside one process",
            hint="set STAGEFLOW_BROKER_URL=amqp://... (or run `stageflow demo` for the embedded demo)",
        )
    metrics = WorkerMetrics() if settings.metrics_port else None
    tracing = tracing_from_environment("stageflow-worker", link_after_s=settings.trace_link_after_s)
    observers = [o for o in (metrics, tracing) if o is not None]
    flow = Stageflow.from_settings(settings, connection_name=f"stageflow-worker-{os.getpid()}", observers=observers)
    settle_garbage_collector()  # code and cases are loaded; no connection exists yet
    http_adapter = hosted_http_adapter(settings, flow.broker, signer=flow.engine.signer, tracing=tracing)
    async with flow, http_adapter as http:
        worker = flow.worker()
        server = None
        readiness = Readiness(flow.store, flow.broker)
        if metrics is not None:
            metrics.bind(in_flight=lambda: worker.in_flight, broker=flow.broker, store=flow.store)
            server = MetricsServer(metrics.registry, ready=readiness, port=settings.metrics_port,
                                   host=settings.metrics_host)

        async def start() -> None:
            if server is not None:  # first: /healthz answers while the worker starts, /readyz once it consumes
                await server.start()
            await worker.start()
            if http is not None:
                await http.start()
            readiness.consuming()

        async def stop() -> None:
            readiness.stopping()  # draining: /readyz says 503 from now on, /healthz answers until the end
            # In-flight HTTP requests finish and reply first; then the worker applies what it holds.
            if http is not None:
                await http.stop()
            await worker.stop()
            if server is not None:  # last: a scrape sees the final counts of a clean shutdown
                await server.stop()
            if tracing is not None:
                tracing.shutdown()  # export the last spans

        await run_until_signalled(start, stop)
