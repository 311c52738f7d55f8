"""``stageflow services|dbquery|notify``: run services until SIGTERM, each with metrics, traces and a clean stop.

``services`` runs a module's handlers; ``dbquery`` and ``notify`` run the built-in services behind blueprint
``db_query`` and ``notify`` steps. All three share one way of running (``_serve``): connect, start the
services, wait for a signal, stop consuming and finish what is in flight, then close.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import click

from framework.errors import ConfigurationError, StageflowError
from framework.loops import loop_factory
from framework.settings import Settings

if TYPE_CHECKING:
    from framework.broker.base import Broker
    from framework.service.sdk import Service
    from framework.taskid import TaskIdSigner

# What a command hosts: given the broker and (for the built-in services) the signer, the services to run.
Hosting = Callable[["Broker"], AbstractAsyncContextManager[list["Service"]]]


def _run_service_command(settings: Settings, name: str, hosting: Hosting) -> None:
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(settings, name, hosting))
    except StageflowError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


async def _serve(settings: Settings, name: str, hosting: Hosting) -> None:
    from framework.logs import configure_logging
    from framework.metrics_server import MetricsServer, Readiness
    from framework.runner import run_until_signalled
    from framework.service.metrics import ServiceMetrics
    from framework.telemetry import tracing_from_environment
    from framework.wiring import broker_from_settings

    configure_logging(settings.log_level, json=settings.log_json)
    broker = broker_from_settings(settings, connection_name=f"stageflow-{name}")
    metrics = ServiceMetrics() if settings.metrics_port else None
    tracing = tracing_from_environment(f"stageflow-{name}")
    async with broker, hosting(broker) as running:
        # /readyz: consumers started, not draining, and the broker and every inbox answer
        inboxes = list({id(service.inbox): service.inbox for service in running}.values())
        readiness = Readiness(*inboxes, broker)
        server: MetricsServer | None = None
        if metrics is not None:
            metrics.bind(broker=broker)
            server = MetricsServer(metrics.registry, ready=readiness, port=settings.metrics_port,
                                   host=settings.metrics_host)
        for service in running:
            service.metrics, service.tracing = metrics, tracing

        async def start() -> None:
            if server is not None:
                await server.start()
            for service in running:
                await service.start()
            readiness.consuming()

        async def stop() -> None:
            readiness.stopping()
            # side by side: the whole drain takes one Service.stop timeout, however many APIs there are
            await asyncio.gather(*(service.stop() for service in running))
            if server is not None:
                await server.stop()
            if tracing is not None:
                tracing.shutdown()

        await run_until_signalled(start, stop)


def _signer(settings: Settings) -> TaskIdSigner:
    """The built-in services act only on commands our engine signed (broker access alone runs no SQL)."""
    from framework.taskid import TaskIdSigner

    keys = settings.signing_keys()
    if not keys:
        raise ConfigurationError("STAGEFLOW_SECRET_KEYS is not set", hint="the built-in services verify every "
                                 "command's taskId with the workers' keys: set the same STAGEFLOW_SECRET_KEYS")
    return TaskIdSigner(keys)


@click.command()
@click.argument("module")
@click.option("--db", "db_url", envvar="STAGEFLOW_SERVICES_DB_URL", default=None,
              help="the services' own database (default: STAGEFLOW_STORE_URL)")
def services(module: str, db_url: str | None) -> None:
    """Run the services in MODULE (its HANDLERS) until SIGTERM, e.g. business_cases.order_services."""
    from framework.service.hosting import build_services, inbox_from_url, load_handlers

    settings = Settings()

    @asynccontextmanager
    async def hosting(broker: Broker) -> AsyncIterator[list[Service]]:
        handlers, setup_sql = load_handlers(module)
        inbox = inbox_from_url(db_url or settings.store_url, setup_sql=setup_sql, pool_size=settings.store_pool_size)
        async with inbox:
            yield build_services(handlers, broker=broker, inbox=inbox)

    _run_service_command(settings, "services", hosting)


@click.command()
def dbquery() -> None:
    """Run the db_query service, one `dbquery.<name>` per STAGEFLOW_DB_<NAME> connection, until SIGTERM."""
    from framework.dbquery import DbQuerySettings, db_connections, dbquery_services
    from framework.service.faults import pause_after_commit

    settings = Settings()

    @asynccontextmanager
    async def hosting(broker: Broker) -> AsyncIterator[list[Service]]:
        hosted = dbquery_services(db_connections(), broker=broker, signer=_signer(settings),
                                  settings=DbQuerySettings(), max_message_bytes=settings.max_message_bytes,
                                  after_commit=pause_after_commit(settings.test_pause_after_commit))
        async with AsyncExitStack() as stack:
            for connection in hosted:
                await stack.enter_async_context(connection.inbox)
            yield [connection.service for connection in hosted]

    _run_service_command(settings, "dbquery", hosting)


@click.command()
def notify() -> None:
    """Run the notify service (webhook, email, log notifications) until SIGTERM (STAGEFLOW_SMTP_*...)."""
    from framework.notify import hosted_notifier
    from framework.service.faults import pause_after_commit

    settings = Settings()

    @asynccontextmanager
    async def hosting(broker: Broker) -> AsyncIterator[list[Service]]:
        async with hosted_notifier(settings, broker, signer=_signer(settings),
                                   after_commit=pause_after_commit(settings.test_pause_after_commit)) as service:
            yield [service]

    _run_service_command(settings, "notify", hosting)


SERVICE_COMMANDS = (services, dbquery, notify)
