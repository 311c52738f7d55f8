"""Running one stage: build its context, run its code (under its timeout), plan what it chose, commit.

A stage runs with what resumed it (``Resumed``): the service reply, the fan-in, the event or the failure that led
here.
When the attempt fails and is retried, the retry's wait carries the same ``Resumed``, so every attempt, after
an exception, a timeout or a worker's crash, sees exactly what the first one saw.
"""

from __future__ import annotations

import asyncio

import structlog

from framework.callbacks import CallbackRef, CallbackTokens
from framework.clock import Clock
from framework.committer import Committer
from framework.context import StageContext
from framework.document import ProcessDocument
from framework.errors import MessageError, StageError
from framework.fanout import FanIn
from framework.observers import Observer, Observers
from framework.planner import Plan, Planner
from framework.state import EventResumed, Failure, FailureResumed, JoinResumed, ReplyResumed, Resumed

log = structlog.get_logger("stageflow.engine")


class StageRunner:
    def __init__(self, *, planner: Planner, committer: Committer, clock: Clock, observers: Observers,
                 tokens: CallbackTokens) -> None:
        self._planner = planner
        self._tokens = tokens
        self._committer = committer
        self._clock = clock
        self._observers = observers

    async def run(self, doc: ProcessDocument, stage: str, resumed: Resumed | None = None, *,
                  fan_in: FanIn | None = None) -> bool:
        """Run ``stage`` of ``doc`` (resumed by ``resumed``; ``fan_in`` is the joined results when it is a
        ``JoinResumed``) and commit the transition it chose, or its failure; False if ``doc`` moved on first."""
        case = self._planner.case_of(doc)
        spec = case.stage_named(stage)
        if spec is None:
            raise MessageError(f"case {doc.case!r} version {doc.case_version} has no stage {stage!r}")
        if resumed is None:
            resumed = _resumed_by(doc)
        started = self._clock.now()
        ctx = StageContext(
            process_id=doc.process_id, case=doc.case, stage=stage, transition=doc.version,
            input=case.Input.model_validate(doc.input), store=dict(doc.store), now=started,
            reply=resumed.reply if isinstance(resumed, ReplyResumed) else None, attempt=doc.attempts + 1,
            failure=resumed.failure if isinstance(resumed, FailureResumed) else None,
            fan_in=fan_in if isinstance(resumed, JoinResumed) else None,
            event=resumed.event if isinstance(resumed, EventResumed) else None, search=dict(doc.search),
            tokens=lambda name, expires_at: self._tokens.sign(
                CallbackRef(doc.process_id, doc.case, name, doc.version, expires_at)),
        )
        plan: Plan
        try:
            if spec.timeout_s is None:
                await spec.function(case(), ctx)
            else:
                async with asyncio.timeout(spec.timeout_s):
                    await spec.function(case(), ctx)
            if ctx.outcome is None:
                raise StageError(
                    f"stage {stage!r} ended without an outcome",
                    hint="end every stage with ctx.next(), ctx.call(), ctx.wait(), ctx.complete() or ctx.fail()",
                )
            plan = self._planner.outcome(doc, stage, ctx.store, ctx.outcome, started=started, now=self._clock.now(),
                                         search=ctx.search)
        except Exception as exc:  # noqa: BLE001 - stage code failed: retry, take the failure path, or fail the process
            if isinstance(exc, TimeoutError) and spec.timeout_s is not None:
                reason, retryable = f"stage timed out after {spec.timeout_s:g} s", True
            else:
                reason, retryable = f"{type(exc).__name__}: {exc}", spec.retry.retries(exc)
            log.warning("stage failed", process_id=doc.process_id, case=doc.case, stage=stage, error=reason,
                        attempt=doc.attempts + 1)
            if self._observers:
                self._observers.emit(Observer.stage_failed, doc, stage, reason, attempt=doc.attempts + 1,
                                     retryable=retryable)
            plan = self._planner.failure(doc, stage, reason, retryable=retryable, started=started,
                                         now=self._clock.now(), resumed=resumed)
        return await self._committer.commit(doc, plan)


def _resumed_by(doc: ProcessDocument) -> EventResumed | FailureResumed | None:
    """What the last transition handed the stage: the failure the process just went on from (to an ``on_failed``
    stage, or past an optional one; a failed callback's event is consumed by that same transition), or the event
    it consumed."""
    last: Failure | None = doc.failures[-1] if doc.failures else None
    if last is not None and last.version == doc.version:
        return FailureResumed(failure=last)
    event = next((e for e in reversed(doc.events) if e.consumed == doc.version), None)
    return EventResumed(event=event) if event is not None else None
