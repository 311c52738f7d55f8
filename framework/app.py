"""``Stageflow``: one object that holds a running instance's store, broker, signer and engine.

    async with Stageflow.from_settings(Settings(), cases=[Order]) as flow:
        process = await flow.start("order", {"order_id": "A-1"}, client_key="A-1")
        await flow.worker().start()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Self

import structlog

from framework.broker.base import Broker
from framework.case import BusinessCase
from framework.clock import Clock
from framework.document import ProcessDocument
from framework.engine import Engine
from framework.errors import ConfigurationError, InfrastructureError, ProcessNotFoundError, UnknownCaseError
from framework.observers import Observer
from framework.operations import Operations
from framework.scheduler import Scheduler, collect_schedules
from framework.settings import Settings
from framework.signals import Delivery, Signals
from framework.store.base import ProcessStore
from framework.taskid import TaskIdSigner
from framework.wiring import broker_from_settings, cases_from_settings, store_from_settings, workflows_from_settings
from framework.worker import Worker
from framework.workflows import Workflows

log = structlog.get_logger("stageflow")


class Stageflow:
    def __init__(
        self,
        *,
        cases: Iterable[type[BusinessCase]],
        store: ProcessStore,
        broker: Broker,
        signer: TaskIdSigner,
        settings: Settings | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.settings = settings or Settings()
        self.store = store
        self.broker = broker
        self.engine = Engine(
            cases=cases, store=store, broker=broker, signer=signer, clock=clock,
            relay_grace_s=self.settings.relay_grace_s, max_message_bytes=self.settings.max_message_bytes,
            process_ttl_s=self.settings.process_ttl_s, observers=observers,
        )
        self.operations = Operations(self.engine)
        self.signals = Signals(self.engine)
        self.workflows: Workflows = workflows_from_settings(
            self.settings, store, self.engine.cases, clock=self.engine.clock,
            on_added=lambda cases: self.engine.schedules.add(collect_schedules(cases)),
        )
        self._refreshing: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        cases: Iterable[type[BusinessCase]] | None = None,
        clock: Clock | None = None,
        connection_name: str = "stageflow",
        observers: Sequence[Observer] = (),
    ) -> Self:
        keys = settings.signing_keys()
        if not keys:
            raise ConfigurationError(
                "STAGEFLOW_SECRET_KEYS is not set",
                hint="set it to one or more random secrets, comma-separated, newest first "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
            )
        return cls(
            cases=cases if cases is not None else cases_from_settings(settings),
            store=store_from_settings(settings),
            broker=broker_from_settings(settings, connection_name=connection_name),
            signer=TaskIdSigner(keys),
            settings=settings,
            clock=clock,
            observers=observers,
        )

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        await self.store.open()
        try:
            await self.broker.connect()
            await self.workflows.refresh()
        except BaseException:
            await self.store.close()
            raise
        if self.settings.workflow_refresh_s > 0:
            self._refreshing = asyncio.create_task(self._refresh_workflows(), name="stageflow-workflows")

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        try:
            await self.broker.close()
        finally:
            await self.store.close()

    async def _refresh_workflows(self) -> None:
        """Pick up stored workflows' new versions and active flags while running (``framework.workflows``)."""
        while True:
            await asyncio.sleep(self.settings.workflow_refresh_s)
            try:
                await self.workflows.refresh()
            except InfrastructureError as exc:  # the store is down: the next pass tries again
                log.warning("workflows not refreshed", error=str(exc))
            except Exception:  # a bug must not end the refreshes for the rest of the process's life
                log.exception("workflows refresh failed")

    async def start(
        self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None,
        start_at: datetime | float | None = None,
    ) -> ProcessDocument:
        try:
            return await self.engine.start(case, input, client_key=client_key, start_at=start_at)
        except UnknownCaseError:
            # a workflow saved a moment ago, by another gateway or the CLI: read the store once, then try again
            if isinstance(case, str) and await self.workflows.refresh():
                return await self.engine.start(case, input, client_key=client_key, start_at=start_at)
            raise

    async def get(self, process_id: str) -> ProcessDocument:
        doc = await self.store.load(process_id)
        if doc is None:
            raise _not_found(process_id)
        return doc

    async def get_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]]:
        """The document and its history entries, oldest first (one store round trip where the store can)."""
        found = await self.store.load_with_history(process_id)
        if found is None:
            raise _not_found(process_id)
        return found

    async def get_by_key(self, case: str, client_key: str) -> ProcessDocument:
        """The process of ``case`` started with ``client_key``; ``ProcessNotFoundError`` if there is none."""
        return await self.signals.find(case, client_key)

    async def send_event(self, process_id: str, name: str, data: Any = None, *,
                         event_id: str | None = None) -> Delivery:
        """Deliver the event ``name`` to a process: it resumes the ``ctx.wait_for(name)`` it waits in, or is kept
        for a later one. The same ``event_id`` twice changes nothing the second time."""
        return await self.signals.send(process_id, name, data, event_id=event_id)

    @property
    def schedules(self) -> Scheduler:
        """List, pause and resume schedules (``flow.schedules.pause("nightly-import")``)."""
        return self.engine.schedules

    def worker(self, **options: Any) -> Worker:
        defaults = {
            "prefetch": self.settings.prefetch,
            "timer_interval_s": self.settings.timer_interval_s,
            "poison_after": self.settings.poison_after,
            "release": self.settings.release,
            "heartbeat_s": self.settings.heartbeat_s,
        }
        return Worker(self.engine, refresh_cases=self.workflows.refresh, **{**defaults, **options})


def _not_found(process_id: str) -> ProcessNotFoundError:
    return ProcessNotFoundError(f"no process {process_id!r}", process_id=process_id)
