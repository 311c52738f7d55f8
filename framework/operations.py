"""Operator actions: cancel a process, retry a failed one (from its failed stage or a named one, maybe with
corrected input), and reprocess many by filter. The gateway and the CLI expose these.

Each action is a transition like any other: a compare-and-set on the document's version, so it never
races a worker into a half-written state; messages still in flight for the old version become stale.
"""

from __future__ import annotations

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
    StageError,
    StageflowError,
)
from framework.store.base import ProcessFilter
from framework.transitions import Plan, run_stage_message

log = structlog.get_logger("stageflow.operations")

_CAS_ATTEMPTS = 20
RETRYABLE_STATUSES = (Status.FAILED, Status.CANCELLED)


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
        """Cancel a process that has not finished. Pending messages and timers of it become no-ops."""

        def plan(doc: ProcessDocument) -> Plan:
            if doc.status.finished:
                raise ProcessStateError(
                    f"process {process_id} is already {doc.status.value}", hint="only unfinished processes can be cancelled"
                )
            now = self.engine.clock.now()
            new, entry = self.engine.planner.step(doc, None, now, now)
            new.status, new.ended_at = Status.CANCELLED, now
            # Waiting on a reply or a fan-out, the stage to run again on retry is the one that asked, not the one
            # its answer would have resumed (that one needs the answer).
            stage = (doc.waiting or {}).get("from") or doc.stage
            new.error = {"stage": stage, "reason": reason, "at": now, "version": new.version}
            entry.update(event="cancelled", reason=reason, stage=stage)
            return new, entry

        return await self._transition(process_id, plan)

    async def retry(
        self, process_id: str, *, from_stage: str | None = None, input: Any = None
    ) -> ProcessDocument:
        """Run a failed (or cancelled) process again from its failed stage, or from ``from_stage``.

        ``input`` replaces the process input (validated like at start). The store is kept, so stages
        before the restart point keep their results.
        """

        def plan(doc: ProcessDocument) -> Plan:
            if doc.status not in RETRYABLE_STATUSES:
                raise ProcessStateError(
                    f"process {process_id} is {doc.status.value}", hint="only failed or cancelled processes can be retried"
                )
            case = self.engine.cases.get(doc.case, doc.case_version)
            stage = from_stage or (doc.error or {}).get("stage") or case.stages[0].name
            if case.stage_named(stage) is None:
                raise StageError(
                    f"case {case.name!r} has no stage {stage!r}",
                    hint=f"known stages: {', '.join(s.name for s in case.stages)}",
                )
            now = self.engine.clock.now()
            new, entry = self.engine.planner.step(doc, None, now, now)
            if input is not None:
                new.input = case.validate_input(input).model_dump(mode="json")
            new.status, new.stage, new.error, new.ended_at, new.result, new.attempts = (
                Status.RUNNING, stage, None, None, None, 0,
            )
            new.outbox = [run_stage_message(new, stage)]
            entry.update(event="retried", to=stage, input_changed=input is not None)
            return new, entry

        return await self._transition(process_id, plan)

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
            new, entry = plan(doc)
            if await self.engine.commit_plan(doc, (new, entry)):
                return new
        raise ProcessStateError(
            f"process {process_id} kept changing; the action was not applied", hint="try again"
        )
