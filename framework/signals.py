"""Delivering external events to processes: by process id, by case and client key, or through a callback token.

Each delivery is one compare-and-set transition planned by the planner (``Planner.deliver``): the event is
recorded on the document; the wait for it (``ctx.wait_for``) resumes, or the event is kept on the record for a
later wait. A repeated event id changes nothing. Bad input (a bad name or id, data that is not JSON, too large
or with a NUL character) is refused before anything is read or written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from framework.context import APPROVAL_PREFIX, EVENT_NAME
from framework.document import ProcessDocument
from framework.engine import Engine
from framework.errors import InvalidInputError, ProcessNotFoundError, ProcessStateError
from framework.state import Event, EventWait
from framework.values import holds_nul

MAX_EVENT_DATA_BYTES = 32 * 1024  # the record lives in the document, which every transition rewrites
MAX_EVENT_ID_CHARS = 200
_CAS_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of an event: ``duplicate`` (its id was on the record: nothing changed), else ``resumed`` (a
    wait took it) or kept on the record for a later ``wait_for``."""

    process_id: str
    name: str
    event_id: str
    duplicate: bool
    resumed: bool
    status: str


class Signals:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def send(self, process_id: str, name: str, data: Any = None, *, event_id: str | None = None,
                   ok: bool = True) -> Delivery:
        """Deliver the event ``name`` with ``data`` to the process (see the module docstring)."""
        engine = self._engine
        event = self._event(name, data, event_id, ok, engine.clock.now())
        for _ in range(_CAS_ATTEMPTS):  # a worker may commit between our read and our write: read again
            doc = await engine.store.load(process_id)
            if doc is None:
                raise ProcessNotFoundError(f"no process {process_id!r}", process_id=process_id)
            plan = engine.planner.deliver(doc, event, now=engine.clock.now())
            if plan is None:
                return Delivery(process_id, event.name, event.id, True, False, doc.status.value)
            if await engine.commit(doc, plan):
                resumed = any(e.id == event.id and e.consumed == plan.doc.version for e in plan.doc.events)
                return Delivery(process_id, event.name, event.id, False, resumed, plan.doc.status.value)
        raise ProcessStateError(f"process {process_id} kept changing; the event was not delivered",
                                hint="send it again (with the same event id)")

    async def send_by_key(self, case: str, client_key: str, name: str, data: Any = None, *,
                          event_id: str | None = None) -> Delivery:
        """``send`` to the process of ``case`` started with ``client_key``."""
        doc = await self.find(case, client_key)
        return await self.send(doc.process_id, name, data, event_id=event_id)

    async def callback(self, token: str, *, ok: bool = True, data: Any = None) -> Delivery:
        """Complete (``ok``) or fail the wait a callback token was made for. A forged token raises
        ``CallbackTokenError`` (``expired`` when its time is up); a used one, ``ProcessStateError``."""
        ref = self._engine.callbacks.verify(token, now=self._engine.clock.now())
        delivery = await self.send(ref.process_id, ref.name, data, event_id=ref.event_id, ok=ok)
        if delivery.duplicate:
            raise ProcessStateError("this callback token has been used already", process_id=ref.process_id,
                                    hint="a callback token completes its wait once")
        return delivery

    async def decide(self, process_id: str, *, approved: bool, comment: str | None = None,
                     by: str | None = None) -> Delivery:
        """Approve or reject the approval the process waits for (a blueprint ``approval`` step). Once per wait: a
        later decision is refused (``ProcessStateError``), a concurrent one is a duplicate that changes nothing."""
        doc = await self._engine.store.load(process_id)
        if doc is None:
            raise ProcessNotFoundError(f"no process {process_id!r}", process_id=process_id)
        wait = doc.waiting
        if not (isinstance(wait, EventWait) and wait.name.startswith(APPROVAL_PREFIX)):
            raise ProcessStateError(f"process {process_id} is not waiting for an approval", process_id=process_id,
                                    hint="GET /processes/{id} shows what it waits for")
        decision = {"approved": approved, "comment": comment, "by": by}
        return await self.send(process_id, wait.name, decision, event_id=f"{wait.name}@{doc.version}")

    async def find(self, case: str, client_key: str) -> ProcessDocument:
        """The process of ``case`` started with ``client_key`` (any version of the case)."""
        doc = await self._engine.store.load_by_key(case, client_key)
        if doc is None:
            raise ProcessNotFoundError(f"no process of case {case!r} with client key {client_key!r}", case=case)
        return doc

    @staticmethod
    def _event(name: str, data: Any, event_id: str | None, ok: bool, at: float) -> Event:
        errors: list[dict[str, str]] = []
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            errors.append({"field": "name", "message": "1-100 letters, digits or _ . : -"})
        if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_CHARS
                                     or "\x00" in event_id):
            errors.append({"field": "event_id", "message": f"1-{MAX_EVENT_ID_CHARS} characters, no NUL"})
        try:
            size = len(orjson.dumps(data))
        except orjson.JSONEncodeError as exc:
            errors.append({"field": "data", "message": f"not JSON: {exc}"})
        else:
            if size > MAX_EVENT_DATA_BYTES:
                errors.append({"field": "data", "message": f"{size} bytes, over {MAX_EVENT_DATA_BYTES}"})
            elif holds_nul(data):
                errors.append({"field": "data", "message": "a NUL character cannot be stored"})
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidInputError(f"invalid event: {detail}", errors=errors)
        return Event(name=name, id=event_id or uuid.uuid4().hex, data=data, at=at, ok=ok)
