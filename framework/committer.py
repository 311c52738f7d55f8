"""Committing planned transitions and publishing what they produced.

``commit`` writes a plan's document with its outbox and history entry in one compare-and-set on the version
(one store write per transition), then publishes the outbox with confirms. A plan whose data the store refuses
(not JSON, or a NUL character PostgreSQL cannot keep) is replaced by the stage's failure, so a process never
stays half-written; an operator's action with such data is refused instead (``InvalidInputError``): the data
is the operator's, not the stage's. A finished child process also tells its parent: its end is the parent's item result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson
import structlog

from framework.broker.base import INNER, Broker, Outgoing
from framework.clock import Clock
from framework.document import OutboxMessage, ProcessDocument, Status
from framework.errors import BrokerError, InvalidInputError, UnstorableDataError
from framework.fanout import item_done_message
from framework.observers import Observer, Observers
from framework.planner import Plan, Planner
from framework.signing import MessageSigner
from framework.state import ResendWait, RetryWait
from framework.store.protocols import DocumentStore
from framework.telemetry import publish_headers

log = structlog.get_logger("stageflow.engine")
_NO_HEADERS: Mapping[str, Any] = MappingProxyType({})  # shared by every publish without observers (read only)


class Committer:
    def __init__(
        self, *, store: DocumentStore, broker: Broker, planner: Planner, clock: Clock, relay_grace_s: float,
        process_ttl_s: float, max_message_bytes: int, observers: Observers, messages: MessageSigner,
    ) -> None:
        self._store = store
        self._broker = broker
        self._planner = planner
        self._clock = clock
        self._relay_grace_s = relay_grace_s
        self._process_ttl_s = process_ttl_s
        self._max_message_bytes = max_message_bytes
        self._observers = observers
        self._messages = messages

    async def commit(self, doc: ProcessDocument, plan: Plan, *, operator: bool = False) -> bool:
        """Commit ``plan`` (the next version of ``doc``) and publish its outbox; False if ``doc`` moved on.
        ``operator``: the plan is an operator's action, refused as a whole if the store cannot keep its data."""
        if self._observers.stamping:  # e.g. the trace context, in this same write
            plan = dataclasses.replace(plan, doc=self._observers.stamp(plan.doc))
        try:
            committed = await self._write(doc, plan)
        except (orjson.JSONEncodeError, UnstorableDataError) as exc:
            if operator:
                log.info("operator action refused by the store", process_id=doc.process_id, error=str(exc))
                message = "the request holds data the store cannot keep (e.g. a NUL character); nothing was changed"
                raise InvalidInputError(message, errors=[{"field": "(body)", "message": message}],
                                        process_id=doc.process_id) from None
            # The driver's own text stays in the log: the reason is served by the status API.
            log.warning("stage data refused by the store", process_id=doc.process_id, error=str(exc))
            reason = (f"stage data is not JSON-serialisable: {exc}" if isinstance(exc, orjson.JSONEncodeError)
                      else "stage data cannot be stored: the store refused it (e.g. a NUL character)")
            now = self._clock.now()
            plan = self._planner.failure(doc, plan.entry.get("stage") or doc.stage or "(none)", reason, retryable=False,
                                         started=now, now=now)
            if self._observers.stamping:
                plan = dataclasses.replace(plan, doc=self._observers.stamp(plan.doc))
            committed = await self._write(doc, plan)
        new = plan.doc
        if not committed:
            log.debug("transition lost the race", process_id=doc.process_id, version=doc.version)
            return False
        # debug, not info: one line per transition costs ~50 us (console) and the history table has them all
        log.debug("transition", process_id=doc.process_id, case=doc.case, case_version=doc.case_version,
                  stage=plan.entry.get("stage"), transition=doc.version, version=new.version,
                  outcome=plan.entry.get("event"))
        if self._observers:
            self._observers.emit(Observer.transition_committed, new, plan.entry)
            if plan.fan_out is not None:
                self._observers.emit(Observer.fan_out_items, started=plan.fan_out.released, finished=0)
            if isinstance(new.waiting, RetryWait | ResendWait):
                self._observers.emit(Observer.retry_scheduled, new, new.waiting)
        await self.publish(new.process_id, new.outbox)
        return True

    async def _write(self, doc: ProcessDocument, plan: Plan) -> bool:
        new, entry = plan.doc, plan.entry
        due_at = new.due_at(self._relay_grace_s)
        if plan.fan_out is not None:
            return await self._store.commit_fan_out(new, entry, expected_version=doc.version, due_at=due_at,
                                                    fan_out=plan.fan_out)
        if new.parent is not None and new.status.finished and not doc.status.finished:
            new.outbox.append(self.item_done(new))  # a child's end is its parent's item result
        expires_at = new.ended_at + self._process_ttl_s if new.status.finished and new.ended_at else None
        return await self._store.commit(new, entry, expected_version=doc.version, due_at=due_at,
                                        expires_at=expires_at)

    async def publish(self, process_id: str, outbox: Sequence[OutboxMessage], *, due: ProcessDocument | None = None,
                      waited_s: float = 0.0) -> None:
        """Publish committed messages. A broker failure is not fatal: the due-work loop re-publishes them.
        ``due``: the due-work loop publishes them for this document, ``waited_s`` after its last transition."""
        if not outbox:
            return
        # Inner messages are signed here, as they leave, not in the outbox: every publish (the relay's, a
        # sweep's) signs with the newest key, and documents written by a release that did not sign still work.
        sign = self._messages.sign
        headers: Mapping[str, Any] = _NO_HEADERS
        if self._observers:  # the hop latency's start and observers' headers (trace context)
            headers = publish_headers()
            self._observers.emit(Observer.publishing, headers)
            if due is not None:
                self._observers.emit(Observer.publishing_due, due, headers, waited_s=waited_s)
        try:
            await self._broker.publish([
                Outgoing(m.queue, m.message_id, sign(m.body.encode()) if m.queue == INNER else m.body.encode(), headers)
                for m in outbox
            ])
        except BrokerError as exc:
            log.warning("outbox left for the relay", process_id=process_id, error=str(exc))

    def item_done(self, child: ProcessDocument) -> OutboxMessage:
        """A finished child's answer to its parent: its result, or why it did not complete. A result too large
        for one message fails the item (the parent would park the message and ask again for ever)."""
        parent = child.parent
        if parent is None:
            raise ValueError(f"process {child.process_id} is not a child process")
        ok = child.status is Status.COMPLETED
        error = None if ok else (child.error.reason if child.error else f"child process {child.status.value}")
        message = item_done_message(parent, child.process_id, ok=ok, result=child.result if ok else None,
                                    error=error)
        size = len(message.body.encode())
        if size <= self._max_message_bytes:
            return message
        error = (f"child process result is {size} bytes, over the {self._max_message_bytes}-byte message limit (it"
                 f" is kept in child process {child.process_id})")
        return item_done_message(parent, child.process_id, ok=False, result=None, error=error)
