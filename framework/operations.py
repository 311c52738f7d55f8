"""Operator actions: cancel a process, retry a failed one (from its failed stage or a named one, maybe with
corrected input), and reprocess many by filter. The gateway and the CLI expose these.

Each action is a transition like any other: a compare-and-set on the document's version, so it never
races a worker into a half-written state; messages still in flight for the old version become stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from framework.document import ProcessDocument, Status
from framework.engine import Engine
from framework.errors import (
    InfrastructureError,
    InvalidInputError,
    ProcessNotFoundError,
    ProcessStateError,
    StageflowError,
)
from framework.fanout import child_process_id
from framework.planner import RETRYABLE_STATUSES, Plan
from framework.state import FanOutWait
from framework.store.base import ProcessFilter

log = structlog.get_logger("stageflow.operations")

_CAS_ATTEMPTS = 20


def reprocess_filter(where: ProcessFilter) -> ProcessFilter:
    """The filter of a reprocess: failed processes unless it names another retryable status."""
    if where.status is None:
        return dataclasses.replace(where, status=Status.FAILED.value)
    if where.status not in {s.value for s in RETRYABLE_STATUSES}:
        message = f"only {' or '.join(s.value for s in RETRYABLE_STATUSES)} processes can be reprocessed"
        raise InvalidInputError(f"cannot reprocess status {where.status!r}: {message}",
                                errors=[{"field": "status", "message": message}])
    return where


class Operations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def cancel(self, process_id: str, *, reason: str = "cancelled by an operator") -> ProcessDocument:
        """Cancel a process that has not finished. Pending messages and timers of it become no-ops. A process
        waiting on a fan-out cascades: its pending and running items are cancelled (none starts after this),
        and so are its running child processes (and theirs)."""
        planner, clock = self.engine.planner, self.engine.clock
        before: list[ProcessDocument] = []

        def plan(doc: ProcessDocument) -> Plan:
            before[:] = [doc]
            return planner.cancel(doc, reason, now=clock.now())

        cancelled = await self._transition(process_id, plan)
        wait = before[0].waiting
        if isinstance(wait, FanOutWait):
            for item in await self.engine.store.cancel_items(process_id, wait.group, now=clock.now()):
                if "case" not in item.spec:
                    continue
                # Not started (it never will be: the item is cancelled), or finished already: nothing to do.
                with contextlib.suppress(ProcessNotFoundError, ProcessStateError):
                    await self.cancel(child_process_id(process_id, wait.group, item.index),
                                      reason=f"parent process {process_id} cancelled: {reason}"[:1000])
        return cancelled

    async def retry(
        self, process_id: str, *, from_stage: str | None = None, input: Any = None
    ) -> ProcessDocument:
        """Run a failed (or cancelled) process again from its failed stage, or from ``from_stage``.

        ``input`` replaces the process input (validated like at start). The store is kept, so stages
        before the restart point keep their results.
        """
        planner, clock = self.engine.planner, self.engine.clock
        return await self._transition(
            process_id, lambda doc: planner.retry(doc, from_stage=from_stage, input=input, now=clock.now())
        )

    async def reprocess(
        self,
        where: ProcessFilter,
        *,
        from_stage: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        page_size: int = 500,
    ) -> dict[str, int]:
        """Retry every process that matches ``where`` (status ``failed`` unless it says otherwise).

        Works page by page (keyset pagination), so it is safe on millions of processes; ``progress`` is
        called after each page with (retried so far, skipped so far). The gateway and the CLI run this as a
        recorded background job instead (``framework.jobs``), with ``reprocess_each``.
        """
        retried = skipped = 0
        async for _, reason in self.reprocess_each(where, from_stage=from_stage, page_size=page_size):
            retried, skipped = (retried + 1, skipped) if reason is None else (retried, skipped + 1)
            if progress is not None and (retried + skipped) % page_size == 0:
                progress(retried, skipped)
        if progress is not None and (retried + skipped) % page_size:
            progress(retried, skipped)
        return {"retried": retried, "skipped": skipped}

    async def reprocess_each(
        self, where: ProcessFilter, *, from_stage: str | None = None, after: str | None = None, page_size: int = 500
    ) -> AsyncIterator[tuple[str, str | None]]:
        """Retry the matches of ``where`` one by one, in process id order, after the id ``after``; yield each
        id with None (retried) or why it was skipped (not failed any more, no such stage in its version).

        Ids are read a page at a time with the store's keyset cursor. A store or broker outage ends the walk
        with its error: go on later after the last id yielded.
        """
        where = reprocess_filter(where)
        while True:
            ids = await self.engine.store.find_ids(where, after=after, limit=page_size)
            if not ids:
                return
            for process_id in ids:
                reason = None
                try:
                    await self.retry(process_id, from_stage=from_stage)
                except InfrastructureError:
                    raise
                except StageflowError as exc:
                    log.info("not reprocessed", process_id=process_id, reason=exc.message)
                    reason = exc.message
                yield process_id, reason
            after = ids[-1]

    async def _transition(self, process_id: str, plan: Callable[[ProcessDocument], Plan]) -> ProcessDocument:
        # A worker may commit between our read and our write: read again and re-plan until we win.
        for _ in range(_CAS_ATTEMPTS):
            doc = await self.engine.store.load(process_id)
            if doc is None:
                raise ProcessNotFoundError(f"no process {process_id!r}", process_id=process_id)
            planned = plan(doc)
            if await self.engine.commit(doc, planned):
                return planned.doc
        raise ProcessStateError(
            f"process {process_id} kept changing; the action was not applied", hint="try again"
        )
