"""The engine: one transition at a time, committed once, published after the commit.

A transition: read the message, load the process document, check the message's transition number
against the document's version (a duplicate or stale message stops here), run the stage, write the new
document together with its outbox in one compare-and-set, publish the outbox with confirms. The caller
(the worker) acks the message afterwards. A crash anywhere in between is safe:

* before the commit: the message is redelivered and the stage runs again (stage code is at-least-once);
* after the commit, before publishing: the redelivered message finds the document one version ahead and
  re-publishes its outbox; if the message is lost too, the relay re-publishes it after ``relay_grace_s``;
* after publishing, before the ack: the redelivery is a stale duplicate and is dropped.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

from framework.broker.base import INNER, Broker, Outgoing, command_queue
from framework.case import BusinessCase
from framework.clock import Clock, SystemClock
from framework.context import Call, Complete, Fail, Next, Outcome, ServiceReply, StageContext
from framework.document import OutboxMessage, ProcessDocument, Status
from framework.errors import BrokerError, MessageError, ProcessConflictError, StageError
from framework.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RunStage,
    ServiceCommand,
    ServiceReplyMessage,
)
from framework.registry import CaseRegistry
from framework.store.base import ProcessStore
from framework.taskid import TaskIdSigner, TaskRef

log = structlog.get_logger("stageflow.engine")

_RELAY_MAX_INTERVAL_S = 3600.0


class Engine:
    def __init__(
        self,
        *,
        cases: CaseRegistry | Iterable[type[BusinessCase]],
        store: ProcessStore,
        broker: Broker,
        signer: TaskIdSigner,
        clock: Clock | None = None,
        relay_grace_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.cases = cases if isinstance(cases, CaseRegistry) else CaseRegistry(cases)
        self.store = store
        self.broker = broker
        self.signer = signer
        self.clock = clock or SystemClock()
        self.relay_grace_s = relay_grace_s
        self.max_message_bytes = max_message_bytes

    # -- starting --------------------------------------------------------------------------------------

    async def start(
        self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None
    ) -> ProcessDocument:
        """Validate ``input`` and create a process of ``case``; its first stage is published after the commit.

        With a ``client_key``, starting again returns the existing process (and raises
        ``ProcessConflictError`` if the input differs): one key never creates two processes.
        """
        case_cls = self.cases.latest(case if isinstance(case, str) else case.name)
        input_data = case_cls.validate_input(input if input is not None else {}).model_dump(mode="json")
        now = self.clock.now()
        process_id = str(uuid.uuid4())
        first = case_cls.stages[0].name
        doc = ProcessDocument(
            process_id=process_id,
            case=case_cls.name,
            case_version=case_cls.version,
            status=Status.RUNNING,
            input=input_data,
            stage=first,
            version=1,
            created_at=now,
            updated_at=now,
            client_key=client_key,
        )
        doc.outbox = [self._run_stage_message(doc, first)]
        entry = {"version": 1, "event": "started", "to": first, "at": now}
        stored, created = await self.store.create(doc, entry, relay_at=now + self.relay_grace_s)
        if not created:
            if stored.input != input_data:
                raise ProcessConflictError(
                    f"client key {client_key!r} of case {case_cls.name!r} belongs to process "
                    f"{stored.process_id}, started with different input",
                    hint="use a new client key for a new process",
                    process_id=stored.process_id,
                )
            return stored
        await self._publish_outbox(doc)
        log.info("process started", process_id=process_id, case=case_cls.name, client_key=client_key)
        return doc

    # -- consuming -------------------------------------------------------------------------------------

    async def handle_inner(self, body: bytes, *, redelivered: bool = False) -> None:
        """Apply one inner-queue message. Raises ``MessageError``/``UnknownCaseError`` for a message to park."""
        message = RunStage.parse(body, self.max_message_bytes)
        case_cls = self.cases.latest(message.case)
        if case_cls.stage_named(message.stage) is None:
            raise MessageError(f"case {message.case!r} has no stage {message.stage!r}")
        doc = await self._load(message.process_id, message.case)
        if doc.version != message.transition or doc.status is not Status.RUNNING or doc.stage != message.stage:
            await self._drop_stale(doc, message.transition, redelivered)
            return
        await self._transition(doc, message.stage, reply=None)

    async def handle_reply(self, body: bytes, *, redelivered: bool = False) -> None:
        """Apply one service reply. Raises ``TaskIdError`` (forged/altered) or ``MessageError`` to park it."""
        message = ServiceReplyMessage.parse(body, self.max_message_bytes)
        ref = self.signer.verify(message.task_id)
        self.cases.latest(ref.case)
        doc = await self._load(ref.process_id, ref.case)
        waiting = doc.waiting or {}
        if (
            doc.version != ref.transition
            or doc.status is not Status.WAITING
            or waiting.get("task_id") != message.task_id
        ):
            await self._drop_stale(doc, ref.transition, redelivered)
            return
        reply = ServiceReply(api=ref.api, ok=message.ok, data=message.data, error=message.error)
        if not reply.ok:
            now = self.clock.now()
            reason = f"service {ref.api!r} replied with an error: {reply.error}"
            new_doc, entry = self._failed(doc, ref.stage, reason, started=now, now=now)
            await self._commit(doc, new_doc, entry)
            return
        await self._transition(doc, ref.stage, reply=reply)

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
            await self._publish_outbox(doc)
        log.debug(
            "stale message dropped", process_id=doc.process_id, transition=transition, version=doc.version,
            recovered=recovered,
        )

    # -- one transition --------------------------------------------------------------------------------

    async def _transition(self, doc: ProcessDocument, stage: str, *, reply: ServiceReply | None) -> None:
        case_cls = self.cases.get(doc.case, doc.case_version)
        spec = case_cls.stage_named(stage)
        if spec is None:
            raise MessageError(f"case {doc.case!r} version {doc.case_version} has no stage {stage!r}")
        ctx = StageContext(
            process_id=doc.process_id,
            case=doc.case,
            stage=stage,
            transition=doc.version,
            input=case_cls.Input.model_validate(doc.input),
            store=dict(doc.store),
            reply=reply,
        )
        started = self.clock.now()
        try:
            await spec.function(case_cls(), ctx)
            if ctx.outcome is None:
                raise StageError(
                    f"stage {stage!r} ended without an outcome",
                    hint="end every stage with ctx.next(), ctx.call(...), ctx.complete(...) or ctx.fail(...)",
                )
            new_doc, entry = self._apply(case_cls, doc, ctx, ctx.outcome, started)
        except Exception as exc:  # stage code failed: the process fails, with the reason recorded
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("stage raised", process_id=doc.process_id, case=doc.case, stage=stage, error=reason)
            new_doc, entry = self._failed(doc, stage, reason, started=started, now=self.clock.now())
        await self._commit(doc, new_doc, entry)

    async def _commit(self, doc: ProcessDocument, new_doc: ProcessDocument, entry: dict[str, Any]) -> None:
        relay_at = new_doc.updated_at + self.relay_grace_s if new_doc.outbox else None
        try:
            committed = await self.store.commit(new_doc, entry, expected_version=doc.version, relay_at=relay_at)
        except orjson.JSONEncodeError as exc:
            reason = f"stage data is not JSON-serialisable: {exc}"
            new_doc, entry = self._failed(doc, entry["stage"], reason, started=entry["at"], now=new_doc.updated_at)
            committed = await self.store.commit(new_doc, entry, expected_version=doc.version, relay_at=None)
        if not committed:
            log.debug("transition lost the race", process_id=doc.process_id, version=doc.version)
            return
        log.info(
            "transition", process_id=doc.process_id, case=doc.case, stage=entry.get("stage"),
            version=new_doc.version, outcome=entry["event"],
        )
        await self._publish_outbox(new_doc)

    def _apply(
        self, case_cls: type[BusinessCase], doc: ProcessDocument, ctx: StageContext, outcome: Outcome,
        started: float,
    ) -> tuple[ProcessDocument, dict[str, Any]]:
        now = self.clock.now()
        version = doc.version + 1
        entry: dict[str, Any] = {
            "version": version, "stage": ctx.stage, "at": started, "duration_ms": round((now - started) * 1000, 3),
        }
        new = dataclasses.replace(doc, version=version, updated_at=now, store=ctx.store, waiting=None, outbox=[])
        match outcome:
            case Next(stage=target):
                target = target or _name_or_none(case_cls.stage_after(ctx.stage))
                if target is None:
                    return self._finish(new, entry, Complete(None), now)
                _check_target(case_cls, ctx.stage, target)
                new.stage = target
                new.status = Status.RUNNING
                new.outbox = [self._run_stage_message(new, target)]
                entry.update(event="next", to=target)
            case Call(api=api, payload=payload, resume=resume):
                resume = resume or _name_or_none(case_cls.stage_after(ctx.stage))
                if resume is None:
                    raise StageError(
                        f"stage {ctx.stage!r} is the last stage, so its service reply has nowhere to go",
                        hint="pass resume='<stage>' to ctx.call(), or add a stage after it",
                    )
                _check_target(case_cls, ctx.stage, resume)
                task_id = self.signer.sign(TaskRef(doc.process_id, doc.case, api, resume, version))
                body = ServiceCommand(task_id, api, payload).to_json().decode()
                new.stage = resume
                new.status = Status.WAITING
                new.waiting = {"kind": "service", "api": api, "task_id": task_id, "resume": resume, "since": now}
                new.outbox = [OutboxMessage(command_queue(api), f"{doc.process_id}/{version}/0", body)]
                entry.update(event="call", api=api, to=resume)
            case Complete() | Fail():
                return self._finish(new, entry, outcome, now)
        return new, entry

    def _finish(
        self, new: ProcessDocument, entry: dict[str, Any], outcome: Complete | Fail, now: float
    ) -> tuple[ProcessDocument, dict[str, Any]]:
        new.ended_at = now
        if isinstance(outcome, Complete):
            new.status, new.result, new.stage = Status.COMPLETED, outcome.result, None
            entry["event"] = "completed"
        else:
            new.status = Status.FAILED
            new.error = {"stage": entry["stage"], "reason": outcome.reason, "at": now}
            entry.update(event="failed", error=outcome.reason)
        return new, entry

    def _failed(
        self, doc: ProcessDocument, stage: str, reason: str, *, started: float, now: float
    ) -> tuple[ProcessDocument, dict[str, Any]]:
        """The document as failed at ``stage``; the stage's store changes are discarded."""
        version = doc.version + 1
        new = dataclasses.replace(doc, version=version, updated_at=now, waiting=None, outbox=[])
        entry = {"version": version, "stage": stage, "at": started, "duration_ms": round((now - started) * 1000, 3)}
        return self._finish(new, entry, Fail(reason), now)

    def _run_stage_message(self, doc: ProcessDocument, stage: str) -> OutboxMessage:
        body = RunStage(doc.process_id, doc.case, stage, doc.version).to_json().decode()
        return OutboxMessage(INNER, f"{doc.process_id}/{doc.version}/0", body)

    # -- publishing and the relay ----------------------------------------------------------------------

    async def _publish_outbox(self, doc: ProcessDocument) -> None:
        """Publish a committed outbox. A broker failure is not fatal: the relay re-publishes it later."""
        messages = [Outgoing(m.queue, m.message_id, m.body.encode()) for m in doc.outbox]
        try:
            await self.broker.publish(messages)
        except BrokerError as exc:
            log.warning("outbox left for the relay", process_id=doc.process_id, error=str(exc))

    async def relay_due(self, *, limit: int = 200) -> int:
        """Re-publish outboxes whose publication is overdue (their worker may have died). Returns how many.

        Each due document is claimed with a compare-and-set on its relay time, so with many workers
        one re-publishes it; the next check backs off (doubling, capped at an hour).
        """
        now = self.clock.now()
        published = 0
        for doc in await self.store.due_relays(now, limit):
            interval = min(max(self.relay_grace_s, now - doc.updated_at), _RELAY_MAX_INTERVAL_S)
            if await self.store.claim_relay(doc.process_id, doc.version, now, now + interval):
                await self._publish_outbox(doc)
                published += 1
        if published:
            log.info("outboxes relayed", count=published)
        return published


def _name_or_none(spec: Any) -> str | None:
    return spec.name if spec is not None else None


def _check_target(case_cls: type[BusinessCase], stage: str, target: str) -> None:
    if case_cls.stage_named(target) is None:
        raise StageError(
            f"stage {stage!r} goes to unknown stage {target!r}",
            hint=f"known stages: {', '.join(s.name for s in case_cls.stages)}",
        )
