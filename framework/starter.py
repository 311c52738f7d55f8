"""Starting processes: validate the input, create the document with its first message, publish it.

With a ``client_key``, starting again returns the existing process (and raises ``ProcessConflictError`` if
the input differs): one key never creates two processes; if that process has not moved yet, its first message
is published again. The scheduler (through its ``StartProcess``
protocol) and the fan-out's child processes start through the same ``Starter``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from framework.case import BusinessCase
from framework.clock import Clock
from framework.committer import Committer
from framework.document import ParentRef, ProcessDocument
from framework.errors import InvalidInputError, ProcessConflictError, UnstorableDataError
from framework.observers import Observer, Observers
from framework.planner import Planner
from framework.store.protocols import DocumentStore

log = structlog.get_logger("stageflow.engine")


class Starter:
    def __init__(self, *, store: DocumentStore, planner: Planner, committer: Committer, clock: Clock,
                 relay_grace_s: float, observers: Observers) -> None:
        self._store = store
        self._planner = planner
        self._committer = committer
        self._clock = clock
        self._relay_grace_s = relay_grace_s
        self._observers = observers

    async def __call__(
        self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None,
        start_at: datetime | float | None = None, process_id: str | None = None, parent: ParentRef | None = None,
    ) -> tuple[ProcessDocument, bool]:
        """Create a process of ``case`` and say whether it is new (False: its client key already existed).
        ``start_at`` (an aware datetime or epoch seconds) in the future makes it wait until then;
        ``process_id`` and ``parent`` are set for the child processes of a fan-out."""
        name = case if isinstance(case, str) else case.name
        plan = self._planner.start(name, input, now=self._clock.now(), process_id=process_id, client_key=client_key,
                                   parent=parent, start_at=epoch(start_at))
        doc = plan.doc
        if self._observers.stamping:  # e.g. the request's trace context, for a start date's timer
            doc = self._observers.stamp(doc)
        try:
            stored, created = await self._store.create(doc, plan.entry,
                                                       due_at=doc.due_at(self._relay_grace_s))
        except UnstorableDataError as exc:  # e.g. a NUL character, which PostgreSQL cannot keep
            log.info("input refused by the store", case=doc.case, error=str(exc))  # the driver's text stays here
            message = f"the input of case {doc.case!r} cannot be stored: the store refused it (e.g. a NUL character)"
            raise InvalidInputError(message, errors=[{"field": "(input)", "message": message}],
                                    case=doc.case) from None
        if not created:
            if stored.input != doc.input:
                raise ProcessConflictError(
                    f"client key {client_key!r} of case {doc.case!r} belongs to process {stored.process_id}, "
                    "started with different input",
                    hint="use a new client key for a new process",
                    process_id=stored.process_id,
                )
            if stored.version == doc.version and stored.outbox:
                # Still as created: the first try's create may have committed with its answer or its publish
                # lost (a database failover, a broker outage), so a retry with the key sends the first message
                # again rather than leave it to the relay's grace (a duplicate is dropped as stale).
                await self._committer.publish(stored.process_id, stored.outbox)
            return stored, False
        if self._observers:
            self._observers.emit(Observer.process_started, doc)
        await self._committer.publish(doc.process_id, doc.outbox)
        log.info("process started", process_id=doc.process_id, case=doc.case, client_key=client_key)
        return doc, True


def epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        message = "start_at must be a timezone-aware datetime (or epoch seconds)"
        raise InvalidInputError(message, errors=[{"field": "start_at", "message": message}])
    return value.timestamp()
