"""The engine: one transition at a time, committed once, published after the commit.

A transition: read the message, load the process document, check the message against the document (a
duplicate or stale message stops here), run the stage, write the new document together with its outbox
in one compare-and-set, publish the outbox with confirms. The caller (the worker) acks the message
afterwards. A crash anywhere in between is safe:

* before the commit: the message is redelivered and the stage runs again (stage code is at-least-once);
* after the commit, before publishing: the redelivered message finds the document one version ahead and
  re-publishes its outbox; if the message is lost too, the due-work loop re-publishes it after
  ``relay_grace_s``;
* after publishing, before the ack: the redelivery is a stale duplicate and is dropped.

Time lives in the store: a wait, a retry backoff, a start date or a reply deadline is the document's
``due_at``. Every worker runs ``fire_due`` in a loop; a due document is claimed with a compare-and-set,
so one worker publishes the message that fires it, and the transition it causes is version-checked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import structlog

from framework.broker.base import Broker, Outgoing
from framework.case import BusinessCase
from framework.clock import Clock, SystemClock
from framework.context import ServiceReply, StageContext
from framework.context import FanOut
from framework.document import OutboxMessage, ProcessDocument, Status
from framework.errors import (
    BrokerError, InvalidInputError, MessageError, ProcessConflictError, StageError, UnknownCaseError,
    UnstorableDataError,
)
from framework.fanout import (
    FanIn, NewFanOut, child_client_key, child_process_id, dispatch_message, failure_reason, fan_in,
    item_done_message, join_message,
)
from framework.messages import (
    DEFAULT_MAX_MESSAGE_BYTES, ItemDone, RunStage, ServiceReplyMessage, StartChild, parse_inner,
)
from framework.registry import CaseRegistry
from framework.scheduler import Scheduler, collect_schedules
from framework.store.base import ProcessStore
from framework.taskid import TaskIdSigner
from framework.transitions import Plan, Planner, fire_target, run_stage_message

log = structlog.get_logger("stageflow.engine")

_DUE_MAX_INTERVAL_S = 3600.0
DEFAULT_PROCESS_TTL_S = 7 * 24 * 3600.0


class Engine:
    def __init__(
        self,
        *,
        cases: CaseRegistry | Iterable[type[BusinessCase]],
        store: ProcessStore,
        broker: Broker,
        signer: TaskIdSigner,
        clock: Clock | None = None,
        relay_grace_s: float = 120.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        process_ttl_s: float = DEFAULT_PROCESS_TTL_S,
    ) -> None:
        self.cases = cases if isinstance(cases, CaseRegistry) else CaseRegistry(cases)
        self.store = store
        self.broker = broker
        self.signer = signer
        self.clock = clock or SystemClock()
        self.relay_grace_s = relay_grace_s
        self.max_message_bytes = max_message_bytes
        self.process_ttl_s = process_ttl_s
        self.planner = Planner(signer, max_message_bytes=max_message_bytes)
        self.schedules = Scheduler(
            store=store, clock=self.clock, start=self.start_process, schedules=collect_schedules(self.cases)
        )

    # -- starting --------------------------------------------------------------------------------------

    async def start(
        self,
        case: str | type[BusinessCase],
        input: Any = None,
        *,
        client_key: str | None = None,
        start_at: datetime | float | None = None,
    ) -> ProcessDocument:
        """Validate ``input`` and create a process of ``case``; its first stage is published after the commit.

        With a ``client_key``, starting again returns the existing process (and raises
        ``ProcessConflictError`` if the input differs): one key never creates two processes. With a
        ``start_at`` in the future (an aware datetime or epoch seconds) the process waits until then.
        """
        doc, _ = await self.start_process(case, input, client_key=client_key, start_at=start_at)
        return doc

    async def start_process(
        self,
        case: str | type[BusinessCase],
        input: Any = None,
        *,
        client_key: str | None = None,
        start_at: datetime | float | None = None,
        process_id: str | None = None,
        parent: dict[str, Any] | None = None,
    ) -> tuple[ProcessDocument, bool]:
        """Like ``start``; also says whether the process is new (False: its client key already existed).
        ``process_id`` and ``parent`` are set for child processes of a fan-out."""
        case_cls = self.cases.latest(case if isinstance(case, str) else case.name)
        input_data = case_cls.validate_input(input if input is not None else {}).model_dump(mode="json")
        now = self.clock.now()
        first = case_cls.stages[0].name
        doc = ProcessDocument(
            process_id=process_id or str(uuid.uuid4()),
            case=case_cls.name,
            case_version=case_cls.version,
            status=Status.RUNNING,
            input=input_data,
            stage=first,
            version=1,
            created_at=now,
            updated_at=now,
            client_key=client_key,
            parent=parent,
        )
        start = _epoch(start_at)
        if start is not None and start > now:
            self.planner.start_at(doc, first, start)
        else:
            doc.outbox = [run_stage_message(doc, first)]
        entry = {"version": 1, "event": "started", "to": first, "at": now, "start_at": start}
        try:
            stored, created = await self.store.create(doc, entry, due_at=doc.due_at(self.relay_grace_s))
        except UnstorableDataError as exc:  # e.g. a NUL character, which PostgreSQL cannot keep
            message = f"the input of case {case_cls.name!r} cannot be stored: {exc}"
            raise InvalidInputError(message, errors=[{"field": "(input)", "message": str(exc)}],
                                    case=case_cls.name) from None
        if not created:
            if stored.input != input_data:
                raise ProcessConflictError(
                    f"client key {client_key!r} of case {case_cls.name!r} belongs to process "
                    f"{stored.process_id}, started with different input",
                    hint="use a new client key for a new process",
                    process_id=stored.process_id,
                )
            return stored, False
        await self._publish(doc.process_id, doc.outbox)
        log.info("process started", process_id=doc.process_id, case=case_cls.name, client_key=client_key)
        return doc, True

    # -- consuming -------------------------------------------------------------------------------------

    async def handle_inner(self, body: bytes, *, redelivered: bool = False) -> None:
        """Apply one inner-queue message: run a stage, or fire a due timer. Raises ``MessageError`` or
        ``UnknownCaseError`` for a message to park."""
        message = parse_inner(body, self.max_message_bytes)
        self.cases.latest(message.case)  # an unknown case is refused before any read
        if isinstance(message, StartChild):
            await self._start_child(message)
            return
        if isinstance(message, ItemDone):
            await self._complete_item(message.process_id, message.case, message.group, message.index, ok=message.ok,
                                      result=message.result, error=message.error, redelivered=redelivered)
            return
        doc = await self._load(message.process_id, message.case)
        # Stages are those of the version the process started with, which may not be the newest.
        if self.cases.get(doc.case, doc.case_version).stage_named(message.stage) is None:
            raise MessageError(f"case {doc.case!r} version {doc.case_version} has no stage {message.stage!r}")
        if doc.version != message.transition:
            await self._drop_stale(doc, message.transition, redelivered)
            return
        waiting = doc.waiting or {}
        kind = waiting.get("kind")
        now = self.clock.now()
        due = doc.timer_due()
        if doc.status is Status.RUNNING and doc.stage == message.stage:
            await self._run_stage(doc, message.stage)
        elif kind == "fan_out" and doc.status is Status.WAITING and waiting["resume"] == message.stage:
            await self._join(doc, now)
        elif doc.status is not Status.WAITING or fire_target(doc) != message.stage or due is None or now < due:
            # e.g. a timer fired by a worker whose clock runs ahead: the due-work loop fires it again later
            log.debug("message does not apply", process_id=doc.process_id, status=doc.status, waiting=kind)
        elif kind == "timer":  # a retry of a joining stage sees its fan-in again
            await self._run_stage(doc, message.stage, joined=await self._fan_in(doc.process_id, waiting.get("fan_in")))
        elif kind == "resend":
            await self._commit(doc, self.planner.resend(doc, now=now))
        elif kind == "service":  # the reply deadline passed
            reason = f"no reply from service {waiting['api']!r} within {waiting['timeout_s']:g} s"
            case = self.cases.get(doc.case, doc.case_version)
            plan = self.planner.failure(case, doc, waiting["from"], reason, retryable=True, started=now, now=now,
                                        call=waiting)
            await self._commit(doc, plan)

    async def handle_reply(self, body: bytes, *, redelivered: bool = False) -> None:
        """Apply one service reply. Raises ``TaskIdError`` (forged/altered) or ``MessageError`` to park it.

        A reply applies while the process waits for its taskId (also while a re-send of the same command
        is pending); afterwards it is a duplicate and is dropped.
        """
        message = ServiceReplyMessage.parse(body, self.max_message_bytes)
        ref = self.signer.verify(message.task_id)
        self.cases.latest(ref.case)
        if ref.item is not None:  # one item of a fan-out (``ref.transition`` names the fan-out)
            await self._complete_item(ref.process_id, ref.case, ref.transition, ref.item, ok=message.ok,
                                      result=message.data, error=message.error, redelivered=redelivered)
            return
        doc = await self._load(ref.process_id, ref.case)
        waiting = doc.waiting or {}
        if (
            doc.status is not Status.WAITING
            or waiting.get("kind") not in ("service", "resend")
            or waiting.get("task_id") != message.task_id
        ):
            await self._drop_stale(doc, ref.transition, redelivered)
            return
        if message.ok:
            reply = ServiceReply(api=ref.api, ok=True, data=message.data)
            await self._run_stage(doc, waiting["resume"], reply=reply)
            return
        now = self.clock.now()
        reason = f"service {ref.api!r} replied with an error: {message.error}"
        case = self.cases.get(doc.case, doc.case_version)
        plan = self.planner.failure(case, doc, waiting["from"], reason, retryable=message.retryable, started=now,
                                    now=now, call=waiting if message.retryable else None)
        await self._commit(doc, plan)

    def message_key(self, body: bytes, queue: str) -> str | None:
        """A stable name for a message (its process and transition, or its taskId); None if unreadable."""
        try:
            if queue == "service":
                return "reply:" + ServiceReplyMessage.parse(body, self.max_message_bytes).task_id
            message = parse_inner(body, self.max_message_bytes)
        except MessageError:
            return None
        if isinstance(message, RunStage):
            return f"run:{message.process_id}/{message.transition}/{message.stage}"
        kind = "start" if isinstance(message, StartChild) else "done"
        return f"item-{kind}:{message.process_id}/{message.group}/{message.index}"

    async def handle_poison(self, body: bytes, queue: str, reason: str) -> None:
        """A message keeps crashing or killing workers: fail the process it belongs to (the caller parks it)."""
        item: tuple[str, str, int, int] | None = None  # a fan-out item's message: (process, case, group, index)
        try:
            if queue == "service":
                task_id = ServiceReplyMessage.parse(body, self.max_message_bytes).task_id
                ref = self.signer.verify(task_id)
                process_id, transition = ref.process_id, None
                if ref.item is not None:
                    item = (ref.process_id, ref.case, ref.transition, ref.item)
            else:
                message = parse_inner(body, self.max_message_bytes)
                if isinstance(message, RunStage):
                    process_id, transition, task_id = message.process_id, message.transition, None
                else:
                    item = (message.process_id, message.case, message.group, message.index)
        except (MessageError, UnknownCaseError):
            return  # not ours to mark: parking is all that can be done
        if item is not None:
            # The item fails (the join policy decides for the process); left in flight, the sweep would send it again.
            await self._complete_item(*item, ok=False, result=None, error=reason, redelivered=False)
            return
        doc = await self.store.load(process_id)
        if doc is None or doc.status.finished:
            return
        # Only the message the process is waiting on condemns it; a stale one is just parked.
        current = doc.version == transition if task_id is None else (doc.waiting or {}).get("task_id") == task_id
        if current:
            await self._commit(doc, self.planner.poisoned(doc, reason, now=self.clock.now()))

    async def _load(self, process_id: str, case: str) -> ProcessDocument:
        doc = await self.store.load(process_id)
        if doc is None:
            raise MessageError(f"no process {process_id!r} (never created, or expired)")
        if doc.case != case:
            raise MessageError(f"process {process_id!r} is of case {doc.case!r}, not {case!r}")
        return doc

    async def _drop_stale(self, doc: ProcessDocument, transition: int, redelivered: bool) -> None:
        # A redelivered message whose transition is already committed means its worker died after the
        # commit, maybe before publishing: re-publish the outbox now instead of waiting for the relay.
        # (Only on redelivery: a fresh duplicate must not make every later message of the process twice.)
        recovered = redelivered and doc.version == transition + 1 and bool(doc.outbox)
        if recovered:
            await self._publish(doc.process_id, doc.outbox)
        log.debug(
            "stale message dropped", process_id=doc.process_id, transition=transition, version=doc.version,
            recovered=recovered,
        )

    # -- one transition --------------------------------------------------------------------------------

    async def _run_stage(
        self, doc: ProcessDocument, stage: str, *, reply: ServiceReply | None = None, joined: FanIn | None = None
    ) -> None:
        case = self.cases.get(doc.case, doc.case_version)
        spec = case.stage_named(stage)
        if spec is None:
            raise MessageError(f"case {doc.case!r} version {doc.case_version} has no stage {stage!r}")
        started = self.clock.now()
        last_failure = doc.failures[-1] if doc.failures else None
        ctx = StageContext(
            process_id=doc.process_id,
            case=doc.case,
            stage=stage,
            transition=doc.version,
            input=case.Input.model_validate(doc.input),
            store=dict(doc.store),
            now=started,
            reply=reply,
            attempt=doc.attempts + 1,
            failure=last_failure if last_failure and last_failure.get("version") == doc.version else None,
            fan_in=joined,
        )
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
            if isinstance(ctx.outcome, FanOut):
                plan, fan = self.planner.fan_out(case, doc, stage, ctx.store, ctx.outcome, started=started,
                                                 now=self.clock.now())
                await self._commit(doc, plan, fan_out=fan)
                return
            plan = self.planner.outcome(case, doc, stage, ctx.store, ctx.outcome, started=started,
                                        now=self.clock.now())
        except Exception as exc:  # stage code failed: retry, take the failure path, or fail the process
            if isinstance(exc, TimeoutError) and spec.timeout_s is not None:
                reason, retryable = f"stage timed out after {spec.timeout_s:g} s", True
            else:
                reason, retryable = f"{type(exc).__name__}: {exc}", spec.retry.retries(exc)
            log.warning("stage failed", process_id=doc.process_id, case=doc.case, stage=stage, error=reason,
                        attempt=doc.attempts + 1)
            plan = self.planner.failure(case, doc, stage, reason, retryable=retryable, started=started,
                                        now=self.clock.now())
            retry = plan[0].waiting
            if joined is not None and retry is not None and retry.get("kind") == "timer":
                retry["fan_in"] = joined.group  # the retry joins the same fan-out
        await self._commit(doc, plan)

    async def _commit(self, doc: ProcessDocument, plan: Plan, *, fan_out: NewFanOut | None = None) -> bool:
        new, entry = plan
        try:
            if fan_out is not None:
                committed = await self.store.commit_fan_out(new, entry, expected_version=doc.version,
                                                            due_at=new.due_at(self.relay_grace_s), fan_out=fan_out)
            else:
                committed = await self._write(doc, new, entry)
        except (orjson.JSONEncodeError, UnstorableDataError) as exc:
            case = self.cases.get(doc.case, doc.case_version)
            reason = (f"stage data is not JSON-serialisable: {exc}" if isinstance(exc, orjson.JSONEncodeError)
                      else f"stage data cannot be stored: {exc}")
            now = self.clock.now()
            new, entry = self.planner.failure(case, doc, entry["stage"], reason, retryable=False, started=now,
                                              now=now)
            committed = await self._write(doc, new, entry)
        if not committed:
            log.debug("transition lost the race", process_id=doc.process_id, version=doc.version)
            return False
        # debug, not info: one line per transition costs ~50 us (console) and the history table has them all
        log.debug("transition", process_id=doc.process_id, case=doc.case, stage=entry.get("stage"),
                  version=new.version, outcome=entry.get("event"))
        await self._publish(new.process_id, new.outbox)
        return True

    async def _write(self, doc: ProcessDocument, new: ProcessDocument, entry: dict[str, Any]) -> bool:
        if new.parent is not None and new.status.finished and not doc.status.finished:
            new.outbox.append(self._item_done(new))  # a child's end is its parent's item result
        expires_at = new.ended_at + self.process_ttl_s if new.status.finished and new.ended_at else None
        return await self.store.commit(
            new, entry, expected_version=doc.version, due_at=new.due_at(self.relay_grace_s), expires_at=expires_at
        )

    async def commit_plan(self, doc: ProcessDocument, plan: Plan) -> bool:
        """Commit a planned transition of ``doc`` (for operator actions); False if the document moved on."""
        return await self._commit(doc, plan)

    # -- fan-out items --------------------------------------------------------------------------------

    async def _start_child(self, message: StartChild) -> None:
        """Start the child process of one fan-out item (at most once: its id and client key follow from its place).
        A child that cannot start (unknown case, invalid input) is a failed item, not a parked message."""
        parent = {"process_id": message.process_id, "case": message.case, "group": message.group,
                  "index": message.index}
        child_id = child_process_id(message.process_id, message.group, message.index)
        # A re-sent start finds the child it made before, without validating its input again (the child's case
        # may have changed since, and that must not fail an item whose child is running).
        child = await self.store.load(child_id)
        if child is None and not await self._item_in_flight(message.process_id, message.group, message.index):
            return  # a stale start (the item ended, e.g. failed as poison): never run it again
        if child is None:
            try:
                child, _ = await self.start_process(
                    message.child_case, message.input, process_id=child_id, parent=parent,
                    client_key=child_client_key(message.process_id, message.group, message.index),
                )
            except (UnknownCaseError, InvalidInputError, ProcessConflictError) as exc:
                await self._complete_item(message.process_id, message.case, message.group, message.index, ok=False,
                                          result=None, error=f"child process not started: {exc}", redelivered=False)
                return
        if child.status.finished:  # asked again by the parent's sweep: its answer may have been lost
            await self._publish(child_id, [self._item_done(child)])

    async def _item_in_flight(self, process_id: str, group: int, index: int) -> bool:
        rows = await self.store.fan_out_items(process_id, group, after=index - 1, limit=1)
        return bool(rows) and rows[0].index == index and rows[0].status == "dispatched"

    async def _complete_item(
        self, process_id: str, case: str, group: int, index: int, *, ok: bool, result: Any, error: str | None,
        redelivered: bool,
    ) -> None:
        done = await self.store.complete_item(process_id, group, index, ok=ok, result=result, error=error,
                                              now=self.clock.now())
        if done is None:
            log.debug("item of an unknown fan-out dropped", process_id=process_id, group=group, index=index)
            return
        if not done.applied and not redelivered:
            return  # a fresh duplicate: its first copy published what followed
        doc = None
        messages: list[OutboxMessage] = []
        if done.release is not None:
            doc = await self._load(process_id, case)
            resume = (doc.waiting or {}).get("resume")
            if doc.status is Status.WAITING and doc.version == group and resume:
                messages.append(dispatch_message(self.signer, process_id=process_id, case=case, resume=resume,
                                                 group=group, index=done.release.index, spec=done.release.spec))
        if done.state.decided is not None:
            doc = doc or await self._load(process_id, case)
            if doc.version == group and (doc.waiting or {}).get("kind") == "fan_out":
                messages.append(join_message(process_id, case, doc.waiting["resume"], group))
        await self._publish(process_id, messages)

    async def _join(self, doc: ProcessDocument, now: float) -> None:
        """The parent's fan-out is decided (or its time is up): run the resuming stage once with the results."""
        waiting = doc.waiting or {}
        state = await self.store.fan_out_state(doc.process_id, waiting["group"])
        case = self.cases.get(doc.case, doc.case_version)
        deadline = waiting.get("deadline")
        if state is None or (state.decided is None and (deadline is None or now < deadline)):
            return  # not decided yet: a fired timer came early; the completions will send the join
        rows = await self.store.fan_out_items(doc.process_id, waiting["group"])
        joined = fan_in(state, rows)
        if state.decided is None:
            reason = f"fan-out not finished within {waiting['timeout_s']:g} s ({state.done + state.failed} of " \
                     f"{state.total} items done)"
        elif state.decided == "failed":
            reason = failure_reason(state, joined.errors)
        else:
            await self._run_stage(doc, waiting["resume"], joined=joined)
            return
        plan = self.planner.failure(case, doc, waiting["from"], reason, retryable=False, started=now, now=now)
        await self._commit(doc, plan)

    async def _fan_in(self, process_id: str, group: int | None) -> FanIn | None:
        state = None if group is None else await self.store.fan_out_state(process_id, group)
        return None if state is None else fan_in(state, await self.store.fan_out_items(process_id, state.group))

    async def _sweep_fan_out(self, doc: ProcessDocument, now: float) -> list[OutboxMessage]:
        """The safety net of a fan-out: re-send the join if it is decided, else re-dispatch items that have been
        running longer than the relay grace (their replies or children may have been lost with a worker)."""
        waiting = doc.waiting or {}
        group, resume = waiting["group"], waiting["resume"]
        state = await self.store.fan_out_state(doc.process_id, group)
        deadline = waiting.get("deadline")
        if state is None or state.decided is not None or (deadline is not None and now >= deadline):
            return [join_message(doc.process_id, doc.case, resume, group)]
        stale = await self.store.fan_out_items(doc.process_id, group, status="dispatched", limit=state.window,
                                               updated_before=now - self.relay_grace_s)
        return [
            dispatch_message(self.signer, process_id=doc.process_id, case=doc.case, resume=resume, group=group,
                             index=row.index, spec=row.spec)
            for row in stale
        ]

    def _item_done(self, child: ProcessDocument) -> OutboxMessage:
        """A finished child's answer to its parent: its result, or why it did not complete. A result too large
        for one message fails the item (the parent would park the message and ask again for ever)."""
        assert child.parent is not None
        ok = child.status is Status.COMPLETED
        error = None if ok else (child.error or {}).get("reason") or f"child process {child.status.value}"
        message = item_done_message(child.parent, child.process_id, ok=ok, result=child.result if ok else None,
                                    error=error)
        if len(message.body.encode()) <= self.max_message_bytes:
            return message
        error = (f"child process result is {len(message.body.encode())} bytes, over the {self.max_message_bytes}-byte"
                 f" message limit (it is kept in child process {child.process_id})")
        return item_done_message(child.parent, child.process_id, ok=False, result=None, error=error)

    # -- publishing, due work, expiry ------------------------------------------------------------------

    async def _publish(self, process_id: str, outbox: list[OutboxMessage]) -> None:
        """Publish committed messages. A broker failure is not fatal: the due-work loop re-publishes them."""
        if not outbox:
            return
        try:
            await self.broker.publish([Outgoing(m.queue, m.message_id, m.body.encode()) for m in outbox])
        except BrokerError as exc:
            log.warning("outbox left for the relay", process_id=process_id, error=str(exc))

    async def fire_due(self, *, limit: int = 200) -> int:
        """Do the work that is due: fire timers whose time has come, re-publish overdue outboxes, sweep fan-outs,
        and start the processes of due schedule ticks (see ``framework.scheduler``).

        Each due document is claimed with a compare-and-set on its due time, so with many workers one
        acts on it. The claim pushes the due time out (doubling, capped at an hour) in case the message
        published here is lost too; the transition it causes sets a fresh due time anyway.
        """
        now = self.clock.now()
        acted = 0
        for doc in await self.store.due(now, limit):
            timer = doc.timer_due()
            fanning_out = (doc.waiting or {}).get("kind") == "fan_out"
            # A fan-out is swept at a steady pace while its items run, however long; anything else backs off.
            pace = self.relay_grace_s if fanning_out else min(max(self.relay_grace_s, now - doc.updated_at),
                                                               _DUE_MAX_INTERVAL_S)
            next_at = min(now + pace, timer) if timer is not None and timer > now else now + pace
            if not await self.store.claim_due(doc.process_id, doc.version, now, next_at):
                continue
            target = fire_target(doc)
            if fanning_out:
                messages = await self._sweep_fan_out(doc, now)
            elif timer is not None and timer <= now and target is not None:
                # The transition the timer causes supersedes the outbox (it writes a new one).
                messages = [run_stage_message(doc, target, kind="fire")]
            elif now >= doc.updated_at + self.relay_grace_s:
                messages = list(doc.outbox)
            else:
                messages = []
            if messages:
                await self._publish(doc.process_id, messages)
                acted += 1
        if acted:
            log.info("due work published", count=acted)
        return acted + await self.schedules.fire_due()

    async def expire(self, *, limit: int = 1000) -> int:
        """Delete finished processes whose time to live has passed; returns how many."""
        deleted = await self.store.delete_expired(self.clock.now(), limit)
        if deleted:
            log.info("expired processes deleted", count=deleted)
        return deleted


def _epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        message = "start_at must be a timezone-aware datetime (or epoch seconds)"
        raise InvalidInputError(message, errors=[{"field": "start_at", "message": message}])
    return value.timestamp()
