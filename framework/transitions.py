"""Planning transitions: given a document and what happened, the next document and its history entry.

Pure functions of their inputs (no I/O), so every rule of the process lifecycle lives in one place and
is easy to test: a stage's outcome, a failure (retry after a backoff, the ``on_failed`` path, skipping
an optional stage, or failing the process), a service reply that timed out, a re-sent command.
Every plan is a copy of the document at ``version + 1`` with the messages to publish in its outbox.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from framework.broker.base import INNER, command_queue
from framework.case import BusinessCase, StageSpec
from framework.context import Call, Complete, Fail, FanOut, Next, Outcome, Wait
from framework.document import OutboxMessage, ProcessDocument, Status
from framework.errors import StageError
from framework.fanout import NewFanOut, dispatch_message, item_specs, join_message, tolerated
from framework.messages import DEFAULT_MAX_MESSAGE_BYTES, RunStage, ServiceCommand
from framework.taskid import TaskIdSigner, TaskRef

Plan = tuple[ProcessDocument, dict[str, Any]]

_MAX_FAILURES_KEPT = 20


def run_stage_message(doc: ProcessDocument, stage: str, *, kind: str = "run") -> OutboxMessage:
    """The inner message "run ``stage`` of this process at its current version"."""
    body = RunStage(doc.process_id, doc.case, stage, doc.version).to_json().decode()
    return OutboxMessage(INNER, f"{doc.process_id}/{doc.version}/{kind}", body)


def fire_target(doc: ProcessDocument) -> str | None:
    """The stage named in the message that fires this document's timer."""
    waiting = doc.waiting or {}
    return waiting.get("stage") or waiting.get("resume")


class Planner:
    def __init__(self, signer: TaskIdSigner, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._signer = signer
        self._max_message_bytes = max_message_bytes

    def step(self, doc: ProcessDocument, stage: str | None, now: float, started: float) -> Plan:
        """The skeleton of the next document: one version on, no wait, nothing to publish yet."""
        version = doc.version + 1
        new = dataclasses.replace(doc, version=version, updated_at=now, waiting=None, outbox=[])
        entry: dict[str, Any] = {"version": version, "stage": stage, "at": started}
        if stage is not None:
            entry["duration_ms"] = round((now - started) * 1000, 3)
        return new, entry

    # -- a stage ended with an outcome ----------------------------------------------------------------

    def outcome(
        self, case: type[BusinessCase], doc: ProcessDocument, stage: str, store: dict[str, Any],
        outcome: Outcome, *, started: float, now: float,
    ) -> Plan:
        spec = _spec(case, stage)
        new, entry = self.step(doc, stage, now, started)
        new.store = store
        new.attempts = 0
        match outcome:
            case Next(stage=target):
                return self._go(case, new, entry, target or _after(case, stage), event="next")
            case Call(api=api, payload=payload, resume=resume, timeout_s=timeout_s):
                resume = resume or _after(case, stage)
                if resume is None:
                    raise StageError(
                        f"stage {stage!r} is the last stage, so its service reply has nowhere to go",
                        hint="pass resume='<stage>' to ctx.call(), or add a stage after it",
                    )
                _check_target(case, stage, resume)
                task_id = self._signer.sign(TaskRef(doc.process_id, doc.case, api, resume, new.version))
                command = ServiceCommand(task_id, api, payload).to_json().decode()
                limit = timeout_s or spec.reply_timeout_s
                new.status = Status.WAITING
                new.stage = resume
                new.waiting = {"kind": "service", "api": api, "task_id": task_id, "resume": resume, "from": stage,
                               "since": now, "attempt": 1}
                if limit:
                    new.waiting.update(deadline=now + limit, timeout_s=limit)
                new.outbox = [OutboxMessage(command_queue(api), f"{doc.process_id}/{new.version}/call", command)]
                entry.update(event="call", api=api, to=resume)
                return new, entry
            case Wait(until=until, then=then):
                target = then or _after(case, stage)
                if target is None:
                    raise StageError(f"stage {stage!r} is the last stage: wait(then=...) must name a stage")
                if until <= now:
                    return self._go(case, new, entry, target, event="next")
                _check_target(case, stage, target)
                new.status, new.stage = Status.WAITING, target
                new.waiting = {"kind": "timer", "reason": "wait", "stage": target, "until": until}
                entry.update(event="wait", to=target, until=until)
                return new, entry
            case Complete(result=result):
                return self._finish(new, entry, result=result, now=now)
            case Fail(reason=reason):  # the stage failed for good: its store writes are not kept
                return self.failure(case, doc, stage, reason, retryable=False, started=started, now=now)
        raise StageError(f"stage {stage!r} chose an unknown outcome {outcome!r}")

    def fan_out(
        self, case: type[BusinessCase], doc: ProcessDocument, stage: str, store: dict[str, Any], outcome: FanOut,
        *, started: float, now: float,
    ) -> tuple[Plan, NewFanOut]:
        """The stage fanned out: the process waits while its items run; the first ``max_in_flight`` items are
        dispatched with the commit, each completion releases the next (see ``framework.fanout``)."""
        resume = outcome.resume or _after(case, stage)
        if resume is None:
            raise StageError(f"stage {stage!r} is the last stage, so its fan-out has nowhere to join",
                             hint="pass resume='<stage>' to ctx.fan_out(), or add a stage after it")
        _check_target(case, stage, resume)
        specs = item_specs(outcome.items, api=outcome.api, case=outcome.case, max_bytes=self._max_message_bytes)
        new, entry = self.step(doc, stage, now, started)
        new.store, new.attempts = store, 0
        group = new.version  # the parent stays at this version until the join
        fan = NewFanOut(group, specs, outcome.max_in_flight, tolerated(outcome.tolerate, len(specs), outcome.first),
                        outcome.first)
        new.status, new.stage = Status.WAITING, resume
        new.waiting = {"kind": "fan_out", "group": group, "resume": resume, "from": stage, "total": len(specs),
                       "since": now}
        if outcome.timeout_s:
            new.waiting.update(deadline=now + outcome.timeout_s, timeout_s=outcome.timeout_s)
        new.outbox = [
            dispatch_message(self._signer, process_id=doc.process_id, case=doc.case, resume=resume, group=group,
                             index=i, spec=orjson.loads(specs[i]))
            for i in range(fan.released)
        ] or [join_message(doc.process_id, doc.case, resume, group)]
        entry.update(event="fan_out", to=resume, items=len(specs))
        return (new, entry), fan

    def start_at(self, doc: ProcessDocument, first: str, until: float) -> ProcessDocument:
        """A new process that waits for its start date before running its first stage."""
        doc.status = Status.WAITING
        doc.waiting = {"kind": "timer", "reason": "start", "stage": first, "until": until}
        return doc

    # -- failures -------------------------------------------------------------------------------------

    def failure(
        self, case: type[BusinessCase], doc: ProcessDocument, stage: str, reason: str, *, retryable: bool,
        started: float, now: float, call: dict[str, Any] | None = None,
    ) -> Plan:
        """Stage ``stage`` failed (or its service call did, when ``call`` is the waiting record).

        Retry after a backoff while the policy allows; then ``on_failed``, or on to the next stage if the
        stage is optional, or fail the process. The count of attempts is kept in the document.
        """
        spec = _spec(case, stage)
        attempts = doc.attempts + 1
        new, entry = self.step(doc, stage, now, started)
        new.attempts = attempts
        entry.update(error=reason, attempt=attempts)
        if retryable and attempts < spec.retry.attempts:
            until = now + spec.retry.delay_s(attempts)
            new.status = Status.WAITING
            if call is not None:  # re-send the same command (same taskId: the service dedupes)
                command = doc.outbox[0].body if doc.outbox else call["command"]
                new.waiting = {**call, "kind": "resend", "until": until, "attempt": attempts + 1, "error": reason,
                               "command": command}
                new.waiting.pop("deadline", None)
            else:
                new.stage = stage
                new.waiting = {"kind": "timer", "reason": "retry", "stage": stage, "until": until,
                               "attempt": attempts + 1, "error": reason}
            entry.update(event="retry", until=until)
            return new, entry
        failure = {"stage": stage, "reason": reason, "attempts": attempts, "at": now, "version": new.version}
        if spec.on_failed or spec.optional:
            target = spec.on_failed or _after(case, stage)
            failure["went_to"] = target
            new.failures = [*doc.failures, failure][-_MAX_FAILURES_KEPT:]
            new.attempts = 0
            event = "on_failed" if spec.on_failed else "skipped"
            if target is None:
                entry["event"] = event
                return self._finish(new, entry, result=None, now=now)
            return self._go(case, new, entry, target, event=event)
        new.status, new.error, new.ended_at = Status.FAILED, failure, now
        entry["event"] = "failed"
        return new, entry

    def resend(self, doc: ProcessDocument, *, now: float) -> Plan:
        """A retry of a service call is due: publish the same command again and wait for its reply."""
        waiting = dict(doc.waiting or {})
        command = waiting.pop("command")
        new, entry = self.step(doc, waiting["from"], now, now)
        new.status = Status.WAITING
        new.waiting = {**waiting, "kind": "service", "since": now}
        new.waiting.pop("until", None)
        if waiting.get("timeout_s"):
            new.waiting["deadline"] = now + waiting["timeout_s"]
        new.outbox = [OutboxMessage(command_queue(waiting["api"]), f"{doc.process_id}/{new.version}/call", command)]
        entry.update(event="resend", api=waiting["api"], attempt=waiting["attempt"])
        return new, entry

    def poisoned(self, doc: ProcessDocument, reason: str, *, now: float) -> Plan:
        """The process's message keeps crashing or killing workers: fail the process, no retry."""
        stage = doc.stage or "(none)"
        new, entry = self.step(doc, stage, now, now)
        new.status, new.ended_at = Status.FAILED, now
        new.error = {"stage": stage, "reason": reason, "attempts": doc.attempts + 1, "at": now,
                     "version": new.version, "poison": True}
        entry.update(event="failed", error=reason)
        return new, entry

    # -- helpers --------------------------------------------------------------------------------------

    def _go(self, case: type[BusinessCase], new: ProcessDocument, entry: dict[str, Any], target: str | None,
            *, event: str) -> Plan:
        if target is None:  # next() from the last stage completes the process
            return self._finish(new, entry, result=None, now=new.updated_at)
        _check_target(case, entry["stage"], target)
        new.status, new.stage = Status.RUNNING, target
        new.outbox = [run_stage_message(new, target)]
        entry.update(event=event, to=target)
        return new, entry

    def _finish(self, new: ProcessDocument, entry: dict[str, Any], *, result: Any, now: float) -> Plan:
        new.status, new.result, new.stage, new.ended_at = Status.COMPLETED, result, None, now
        entry.setdefault("event", "completed")
        if entry["event"] != "completed":
            entry["completed"] = True
        return new, entry


def _spec(case: type[BusinessCase], stage: str) -> StageSpec:
    spec = case.stage_named(stage)
    if spec is None:
        raise StageError(f"case {case.name!r} has no stage {stage!r}")
    return spec


def _after(case: type[BusinessCase], stage: str) -> str | None:
    spec = case.stage_after(stage)
    return spec.name if spec is not None else None


def _check_target(case: type[BusinessCase], stage: str | None, target: str) -> None:
    if case.stage_named(target) is None:
        raise StageError(
            f"stage {stage!r} goes to unknown stage {target!r}",
            hint=f"known stages: {', '.join(s.name for s in case.stages)}",
        )
