"""Planning transitions: given a document and what happened, the next document and its history entry.

The planner owns every rule of the process lifecycle, and is the only place that makes a next document:
a start, a stage's outcome (next, call, wait, fan-out, complete, fail), a failure (retry after a backoff, the
``on_failed`` path, skipping an optional stage, or failing the process), a service reply's error or deadline,
a re-sent command, a fan-out that failed, an event delivered or overdue, a poison message, and the operators'
cancel and retry. Pure
functions of their inputs (no I/O): every plan is a copy of the document at ``version + 1`` (a start: version
1) with the messages to publish in its outbox. The engine commits plans; it never edits a document.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from framework.broker.base import INNER, command_queue
from framework.case import BusinessCase, StageSpec
from framework.context import Call, Complete, Fail, FanOut, Next, Outcome, Wait, WaitFor
from framework.document import OutboxMessage, ParentRef, ProcessDocument, Status
from framework.errors import ProcessStateError, StageError
from framework.fanout import NewFanOut, dispatch_message, item_specs, join_message, tolerated
from framework.messages import DEFAULT_MAX_MESSAGE_BYTES, RunStage, ServiceCommand
from framework.registry import CaseRegistry
from framework.search import value_problem
from framework.state import (
    CallWait,
    Event,
    EventWait,
    Failure,
    FanOutWait,
    HistoryEntry,
    ResendWait,
    Resumed,
    RetryWait,
    ServiceWait,
    TimerWait,
)
from framework.taskid import TaskIdSigner, TaskRef

_MAX_FAILURES_KEPT = 20
MAX_EVENTS_KEPT = 50  # events on a document's record; the oldest consumed ones make room
MAX_EVENT_RECORD_BYTES = 128 * 1024  # the data of the events on the record, in all
RETRYABLE_STATUSES = (Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True, slots=True)
class Plan:
    """A planned transition: the next document, its history entry and, for a fan-out, the items to write."""

    doc: ProcessDocument
    entry: HistoryEntry
    fan_out: NewFanOut | None = None


def run_stage_message(doc: ProcessDocument, stage: str, *, kind: str = "run") -> OutboxMessage:
    """The inner message "run ``stage`` of this process at its current version"."""
    body = RunStage(doc.process_id, doc.case, stage, doc.version).to_json().decode()
    return OutboxMessage(INNER, f"{doc.process_id}/{doc.version}/{kind}", body)


class Planner:
    def __init__(
        self, cases: CaseRegistry, signer: TaskIdSigner, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.cases = cases
        self._signer = signer
        self._max_message_bytes = max_message_bytes

    def case_of(self, doc: ProcessDocument) -> type[BusinessCase]:
        """The case version the process started with (which may not be the newest)."""
        return self.cases.get(doc.case, doc.case_version)

    # -- a new process --------------------------------------------------------------------------------

    def start(
        self, case: str, input: Any, *, now: float, process_id: str | None = None, client_key: str | None = None,
        parent: ParentRef | None = None, start_at: float | None = None,
    ) -> Plan:
        """A new process of the newest version of ``case``, its input validated: it runs its first stage, or
        waits for ``start_at`` first."""
        case_cls = self.cases.for_start(case)
        input_data = case_cls.validate_input(input if input is not None else {}).model_dump(mode="json")
        first = case_cls.stages[0].name
        doc = ProcessDocument(
            process_id=process_id or str(uuid.uuid4()), case=case_cls.name, case_version=case_cls.version,
            status=Status.RUNNING, input=input_data, stage=first, version=1, created_at=now, updated_at=now,
            client_key=client_key, parent=parent,
        )
        if start_at is not None and start_at > now:
            doc.status, doc.waiting = Status.WAITING, TimerWait(reason="start", stage=first, until=start_at)
        else:
            doc.outbox = [run_stage_message(doc, first)]
        entry = HistoryEntry(version=1, at=now, event="started", to=first)
        if start_at is not None:
            entry["start_at"] = start_at
        return Plan(doc, entry)

    # -- a stage ended with an outcome ----------------------------------------------------------------

    def outcome(
        self, doc: ProcessDocument, stage: str, store: dict[str, Any], outcome: Outcome, *, started: float,
        now: float, search: dict[str, Any] | None = None,
    ) -> Plan:
        case = self.case_of(doc)
        spec = _spec(case, stage)
        new, entry = self._step(doc, stage, now, started)
        if doc.attempts:  # a retry succeeded: its history entry (and trace span) says which attempt it was
            entry["attempt"] = doc.attempts + 1
        new.store, new.attempts = store, 0
        if search is not None and search != doc.search:
            declared = case.search_attributes
            problems = [p for name, value in search.items() if (p := value_problem(declared, name, value))]
            if problems:
                raise StageError("; ".join(problems), hint="declare it in the case's search_attributes, with its type")
            new.search = search
        match outcome:
            case Next(stage=target):
                return self._go(case, new, entry, target or _after(case, stage), event="next")
            case Call(api=api, payload=payload, resume=resume, timeout_s=timeout_s):
                resume = _target(case, stage, resume, "its service reply", "ctx.call()")
                task_id = self._signer.sign(TaskRef(doc.process_id, doc.case, api, resume, new.version))
                command = ServiceCommand(task_id, api, payload).to_json().decode()
                limit = timeout_s or spec.reply_timeout_s
                new.status, new.stage = Status.WAITING, resume
                new.waiting = ServiceWait(api=api, task_id=task_id, resume=resume, from_stage=stage, since=now,
                                          deadline=now + limit if limit else None, timeout_s=limit)
                new.outbox = [OutboxMessage(command_queue(api), f"{doc.process_id}/{new.version}/call", command)]
                entry.update({"event": "call", "api": api, "to": resume})
                return Plan(new, entry)
            case Wait(until=until, then=then):
                target = then or _after(case, stage)
                if target is None:
                    raise StageError(f"stage {stage!r} is the last stage: wait(then=...) must name a stage")
                if until <= now:
                    return self._go(case, new, entry, target, event="next")
                _check_target(case, stage, target)
                new.status, new.stage = Status.WAITING, target
                new.waiting = TimerWait(reason="wait", stage=target, until=until)
                entry.update({"event": "wait", "to": target, "until": until})
                return Plan(new, entry)
            case FanOut():
                return self._fan_out(case, doc, new, entry, outcome)
            case WaitFor(name=name, resume=resume, timeout_s=timeout_s, token=token):
                resume = _target(case, stage, resume, f"its event {name!r}", "ctx.wait_for()")
                early = next((e for e in doc.events if e.name == name and e.consumed is None), None)
                if early is not None:  # it came before the wait: take it at once
                    return self._take(doc, new, entry, stage, resume, early)
                new.status, new.stage = Status.WAITING, resume
                new.waiting = EventWait(name=name, resume=resume, from_stage=stage, since=now, timeout_s=timeout_s,
                                        deadline=now + timeout_s if timeout_s else None, token=token)
                entry.update({"event": "wait_for", "to": resume, "reason": name})
                return Plan(new, entry)
            case Complete(result=result):
                return self._finish(new, entry, result=result, now=now)
            case Fail(reason=reason):  # the stage failed for good: its store writes are not kept
                return self.failure(doc, stage, reason, retryable=False, started=started, now=now)
        raise StageError(f"stage {stage!r} chose an unknown outcome {outcome!r}")

    def _fan_out(
        self, case: type[BusinessCase], doc: ProcessDocument, new: ProcessDocument, entry: HistoryEntry,
        outcome: FanOut,
    ) -> Plan:
        """The process waits while its items run; the first ``max_in_flight`` items are dispatched with the
        commit, each completion releases the next (see ``framework.fanout``)."""
        stage, now = entry.get("stage") or "", new.updated_at
        resume = _target(case, stage, outcome.resume, "its fan-out", "ctx.fan_out()")
        specs = item_specs(outcome.items, api=outcome.api, case=outcome.case, max_bytes=self._max_message_bytes)
        group = new.version  # the parent stays at this version until the join
        fan = NewFanOut(group, specs, outcome.max_in_flight, tolerated(outcome.tolerate, len(specs), outcome.first),
                        outcome.first)
        new.status, new.stage = Status.WAITING, resume
        new.waiting = FanOutWait(group=group, resume=resume, from_stage=stage, total=len(specs), since=now,
                                 deadline=now + outcome.timeout_s if outcome.timeout_s else None,
                                 timeout_s=outcome.timeout_s)
        new.outbox = [
            dispatch_message(self._signer, process_id=doc.process_id, case=doc.case, resume=resume, group=group,
                             index=i, spec=orjson.loads(specs[i]))
            for i in range(fan.released)
        ] or [join_message(doc.process_id, doc.case, resume, group)]
        entry.update({"event": "fan_out", "to": resume, "items": len(specs)})
        return Plan(new, entry, fan)

    # -- failures -------------------------------------------------------------------------------------

    def failure(
        self, doc: ProcessDocument, stage: str, reason: str, *, retryable: bool, started: float, now: float,
        resumed: Resumed | None = None, call: CallWait | None = None,
    ) -> Plan:
        """Stage ``stage`` failed (or its service call did, when ``call`` is the wait for its reply).

        Retry after a backoff while the policy allows (a failed call re-sends the same command; a stage's
        retry carries ``resumed``, what resumed the failed attempt); then ``on_failed``, or on to the next
        stage if the stage is optional, or fail the process. The count of attempts is kept in the document.
        """
        case = self.case_of(doc)
        spec = _spec(case, stage)
        attempts = doc.attempts + 1
        new, entry = self._step(doc, stage, now, started)
        new.attempts = attempts
        entry.update({"error": reason, "attempt": attempts})
        if retryable and attempts < spec.retry.attempts:
            until = now + spec.retry.delay_s(attempts)
            new.status = Status.WAITING
            if call is not None:  # re-send the same command (same taskId: the service dedupes)
                new.waiting = ResendWait(
                    api=call.api, task_id=call.task_id, resume=call.resume, from_stage=call.from_stage,
                    since=call.since, attempt=attempts + 1, until=until, error=reason, command=_command(doc, call),
                    timeout_s=call.timeout_s,
                )
            else:
                new.stage = stage
                new.waiting = RetryWait(stage=stage, until=until, attempt=attempts + 1, error=reason, resumed=resumed)
            entry.update({"event": "retry", "until": until})
            return Plan(new, entry)
        failure = Failure(stage=stage, reason=reason, attempts=attempts, at=now, version=new.version)
        if spec.on_failed or spec.optional:
            target = spec.on_failed or _after(case, stage)
            new.failures = [*doc.failures, dataclasses.replace(failure, went_to=target)][-_MAX_FAILURES_KEPT:]
            new.attempts = 0
            event = "on_failed" if spec.on_failed else "skipped"
            if target is None:
                entry["event"] = event
                return self._finish(new, entry, result=None, now=now)
            return self._go(case, new, entry, target, event=event)
        new.status, new.error, new.ended_at = Status.FAILED, failure, now
        entry["event"] = "failed"
        return Plan(new, entry)

    def reply_error(self, doc: ProcessDocument, wait: CallWait, error: str | None, *, retryable: bool,
                    now: float) -> Plan:
        """The service answered the waited-for command with an error (``retryable``: send it again)."""
        reason = f"service {wait.api!r} replied with an error: {error}"
        return self.failure(doc, wait.from_stage, reason, retryable=retryable, started=now, now=now,
                            call=wait if retryable else None)

    def reply_overdue(self, doc: ProcessDocument, wait: ServiceWait, *, now: float) -> Plan:
        """No reply came before the deadline: the call failed, and may be sent again."""
        reason = f"no reply from service {wait.api!r} within {wait.timeout_s or 0:g} s"
        return self.failure(doc, wait.from_stage, reason, retryable=True, started=now, now=now, call=wait)

    def fan_out_failed(self, doc: ProcessDocument, wait: FanOutWait, reason: str, *, now: float) -> Plan:
        """The fan-out failed its policy or ran out of time: the stage that fanned out fails for good."""
        return self.failure(doc, wait.from_stage, reason, retryable=False, started=now, now=now)

    def resend(self, doc: ProcessDocument, wait: ResendWait, *, now: float) -> Plan:
        """A retry of a service call is due: publish the same command again and wait for its reply."""
        new, entry = self._step(doc, wait.from_stage, now, now)
        new.status, new.waiting = Status.WAITING, wait.service_wait(now)
        new.outbox = [OutboxMessage(command_queue(wait.api), f"{doc.process_id}/{new.version}/call", wait.command)]
        entry.update({"event": "resend", "api": wait.api, "attempt": wait.attempt})
        return Plan(new, entry)

    def deliver(self, doc: ProcessDocument, event: Event, *, now: float) -> Plan | None:
        """An event for the process: None if its id is on the record already (a duplicate changes nothing). The
        wait for it resumes; otherwise it is kept on the record for a later ``wait_for`` (and shown there)."""
        if any(e.id == event.id for e in doc.events):
            return None
        if doc.status.finished:
            raise ProcessStateError(f"process {doc.process_id} is already {doc.status.value}",
                                    hint="events go to unfinished processes only", process_id=doc.process_id)
        wait = doc.waiting
        if isinstance(wait, FanOutWait):  # the join is bound to this version: the event must not move it
            raise ProcessStateError(f"process {doc.process_id} waits on a fan-out",
                                    hint="send the event again once its fan-out has joined")
        new, entry = self._step(doc, None, now, now)
        new.events = _bounded([*doc.events, event], doc.process_id)
        if doc.status is Status.WAITING and isinstance(wait, EventWait) and wait.name == event.name:
            return self._take(doc, new, entry, wait.from_stage, wait.resume, event)
        # Kept for later. The process stays where it is; a due stage's message is re-issued for the new version,
        # and a waited-for command is sent again (same taskId: the service dedupes), so a reply being applied
        # while this commits, which loses its compare-and-set, comes back.
        new.waiting = wait
        new.outbox = [run_stage_message(new, doc.stage)] if doc.status is Status.RUNNING and doc.stage \
            else list(doc.outbox)
        entry.update({"event": "event_kept", "reason": event.name})
        return Plan(new, entry)

    def event_overdue(self, doc: ProcessDocument, wait: EventWait, *, now: float) -> Plan:
        """No event came before the deadline: the waiting stage failed, and may be run again."""
        reason = f"no event {wait.name!r} within {wait.timeout_s or 0:g} s"
        return self.failure(doc, wait.from_stage, reason, retryable=True, started=now, now=now)

    def _take(self, doc: ProcessDocument, new: ProcessDocument, entry: HistoryEntry, from_stage: str, resume: str,
              event: Event) -> Plan:
        """``new`` consumes ``event``: ``resume`` runs next and sees it (a failed callback fails ``from_stage``)."""
        new.events = [dataclasses.replace(e, consumed=new.version) if e.id == event.id else e for e in new.events]
        if not event.ok:
            failed = dataclasses.replace(doc, events=new.events)
            reason = f"callback for event {event.name!r} reported a failure: {event.data!r}"[:2000]
            return self.failure(failed, from_stage, reason, retryable=False, started=entry["at"], now=new.updated_at)
        new.status, new.stage, new.waiting = Status.RUNNING, resume, None
        new.outbox = [run_stage_message(new, resume)]
        entry.update({"stage": entry.get("stage") or from_stage, "event": "event", "to": resume, "reason": event.name})
        return Plan(new, entry)

    def poisoned(self, doc: ProcessDocument, reason: str, *, now: float) -> Plan:
        """The process's message keeps crashing or killing workers: fail the process, no retry."""
        stage = doc.stage or "(none)"
        new, entry = self._step(doc, stage, now, now)
        new.status, new.ended_at = Status.FAILED, now
        new.error = Failure(stage=stage, reason=reason, attempts=doc.attempts + 1, at=now, version=new.version,
                            poison=True)
        entry.update({"event": "failed", "error": reason})
        return Plan(new, entry)

    # -- operators ------------------------------------------------------------------------------------

    def cancel(self, doc: ProcessDocument, reason: str, *, now: float) -> Plan:
        """An operator cancels an unfinished process; its pending messages and timers become stale."""
        if doc.status.finished:
            raise ProcessStateError(f"process {doc.process_id} is already {doc.status.value}",
                                    hint="only unfinished processes can be cancelled")
        new, entry = self._step(doc, None, now, now)
        new.status, new.ended_at = Status.CANCELLED, now
        # Waiting on a reply or a fan-out, the stage to run again on retry is the one that asked, not the one
        # its answer would have resumed (that one needs the answer).
        match doc.waiting:
            case ServiceWait(from_stage=asked) | ResendWait(from_stage=asked) | FanOutWait(from_stage=asked) \
                    | EventWait(from_stage=asked):
                stage: str | None = asked
            case _:
                stage = doc.stage
        new.error = Failure(stage=stage, reason=reason, at=now, version=new.version)
        entry.update({"event": "cancelled", "reason": reason, "stage": stage})
        return Plan(new, entry)

    def retry(self, doc: ProcessDocument, *, from_stage: str | None = None, input: Any = None,
              now: float) -> Plan:
        """An operator runs a failed or cancelled process again from its failed stage (or ``from_stage``),
        maybe with corrected ``input`` (validated like at start); the store is kept."""
        if doc.status not in RETRYABLE_STATUSES:
            raise ProcessStateError(f"process {doc.process_id} is {doc.status.value}",
                                    hint="only failed or cancelled processes can be retried")
        case = self.case_of(doc)
        stage = from_stage or (doc.error.stage if doc.error else None) or case.stages[0].name
        _spec(case, stage)
        new, entry = self._step(doc, None, now, now)
        if input is not None:
            new.input = case.validate_input(input).model_dump(mode="json")
        new.status, new.stage, new.error, new.ended_at, new.result = Status.RUNNING, stage, None, None, None
        new.attempts = 0
        new.outbox = [run_stage_message(new, stage)]
        entry.update({"event": "retried", "to": stage, "input_changed": input is not None})
        return Plan(new, entry)

    # -- helpers --------------------------------------------------------------------------------------

    @staticmethod
    def _step(doc: ProcessDocument, stage: str | None, now: float, started: float
              ) -> tuple[ProcessDocument, HistoryEntry]:
        """The skeleton of the next document: one version on, no wait, nothing to publish yet."""
        version = doc.version + 1
        new = dataclasses.replace(doc, version=version, updated_at=now, waiting=None, outbox=[])
        entry = HistoryEntry(version=version, stage=stage, at=started)
        if stage is not None:
            entry["duration_ms"] = round((now - started) * 1000, 3)
        return new, entry

    def _go(self, case: type[BusinessCase], new: ProcessDocument, entry: HistoryEntry, target: str | None,
            *, event: str) -> Plan:
        if target is None:  # next() from the last stage completes the process
            return self._finish(new, entry, result=None, now=new.updated_at)
        _check_target(case, entry.get("stage"), target)
        new.status, new.stage = Status.RUNNING, target
        new.outbox = [run_stage_message(new, target)]
        entry.update({"event": event, "to": target})
        return Plan(new, entry)

    @staticmethod
    def _finish(new: ProcessDocument, entry: HistoryEntry, *, result: Any, now: float) -> Plan:
        new.status, new.result, new.stage, new.ended_at = Status.COMPLETED, result, None, now
        if "event" in entry:
            entry["completed"] = True
        else:
            entry["event"] = "completed"
        return Plan(new, entry)


def _command(doc: ProcessDocument, call: CallWait) -> str:
    """The command to send again: the one the waited-for transition published."""
    if isinstance(call, ResendWait):
        return call.command
    if not doc.outbox:
        raise StageError(f"process {doc.process_id} waits for a reply but holds no command to send again")
    return doc.outbox[0].body


def _bounded(events: list[Event], process_id: str) -> list[Event]:
    """At most ``MAX_EVENTS_KEPT`` events holding at most ``MAX_EVENT_RECORD_BYTES`` of data (every transition
    rewrites the document): the oldest consumed ones go; an unconsumed one is never dropped, so past the bounds
    with none to drop the delivery is refused."""
    sizes = {e.id: len(orjson.dumps(e.data)) for e in events}
    kept, total = list(events), sum(sizes.values())
    for event in events:
        if len(kept) <= MAX_EVENTS_KEPT and total <= MAX_EVENT_RECORD_BYTES:
            return kept
        if event.consumed is not None:
            kept.remove(event)
            total -= sizes[event.id]
    if len(kept) <= MAX_EVENTS_KEPT and total <= MAX_EVENT_RECORD_BYTES:
        return kept
    raise ProcessStateError(f"process {process_id} holds {len(kept) - 1} events ({total} bytes) no wait has taken",
                            hint="the process does not wait for these events; see its `events` record",
                            process_id=process_id)


def _spec(case: type[BusinessCase], stage: str) -> StageSpec:
    spec = case.stage_named(stage)
    if spec is None:
        raise StageError(f"case {case.name!r} has no stage {stage!r}",
                         hint=f"known stages: {', '.join(s.name for s in case.stages)}")
    return spec


def _after(case: type[BusinessCase], stage: str) -> str | None:
    spec = case.stage_after(stage)
    return spec.name if spec is not None else None


def _target(case: type[BusinessCase], stage: str, resume: str | None, what: str, call: str) -> str:
    target = resume or _after(case, stage)
    if target is None:
        raise StageError(f"stage {stage!r} is the last stage, so {what} has nowhere to go",
                         hint=f"pass resume='<stage>' to {call}, or add a stage after it")
    _check_target(case, stage, target)
    return target


def _check_target(case: type[BusinessCase], stage: str | None, target: str) -> None:
    if case.stage_named(target) is None:
        raise StageError(
            f"stage {stage!r} goes to unknown stage {target!r}",
            hint=f"known stages: {', '.join(s.name for s in case.stages)}",
        )
