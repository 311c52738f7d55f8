"""Coordinating fan-outs while they run: child starts, item completions, the join, and the parent's sweep.

The parent makes no transition while its items run. Each completion is one short store transaction
(``complete_item``) that records the item, decides the join policy and releases the next pending item; the
completion that decides the fan-out sends the join, which resumes the parent once. The sweep (from the
due-work loop) is the safety net for replies and children lost with a worker. See ``framework.fanout``.
"""

from __future__ import annotations

from typing import Any

import structlog

from framework.clock import Clock
from framework.committer import Committer
from framework.document import OutboxMessage, ParentRef, ProcessDocument, Status
from framework.errors import InvalidInputError, MessageError, ProcessConflictError, UnknownCaseError
from framework.fanout import (
    FanIn,
    child_client_key,
    child_process_id,
    dispatch_message,
    failure_reason,
    fan_in,
    join_message,
)
from framework.messages import StartChild
from framework.observers import Observer, Observers
from framework.planner import Planner
from framework.stages import StageRunner
from framework.starter import Starter
from framework.state import FanOutWait, JoinResumed, Resumed
from framework.store.protocols import DocumentStore, FanOutStore
from framework.taskid import TaskIdSigner

log = structlog.get_logger("stageflow.engine")


class FanOutCoordinator:
    def __init__(
        self, *, documents: DocumentStore, items: FanOutStore, signer: TaskIdSigner, planner: Planner,
        committer: Committer, stages: StageRunner, starter: Starter, clock: Clock, relay_grace_s: float,
        observers: Observers,
    ) -> None:
        self._observers = observers
        self._documents = documents
        self._items = items
        self._signer = signer
        self._planner = planner
        self._committer = committer
        self._stages = stages
        self._starter = starter
        self._clock = clock
        self._relay_grace_s = relay_grace_s

    async def start_child(self, message: StartChild) -> None:
        """Start the child process of one fan-out item (at most once: its id and client key follow from its place).
        A child that cannot start (unknown case, invalid input) is a failed item, not a parked message."""
        parent = ParentRef(message.process_id, message.case, message.group, message.index)
        child_id = child_process_id(message.process_id, message.group, message.index)
        # A re-sent start finds the child it made before, without validating its input again (the child's case
        # may have changed since, and that must not fail an item whose child is running).
        child = await self._documents.load(child_id)
        if child is None and not await self._item_in_flight(parent):
            return  # a stale start (the item ended, e.g. failed as poison): never run it again
        if child is None:
            try:
                child, _ = await self._starter(
                    message.child_case, message.input, process_id=child_id, parent=parent,
                    client_key=child_client_key(message.process_id, message.group, message.index),
                )
            except (UnknownCaseError, InvalidInputError, ProcessConflictError) as exc:
                await self.complete_item(parent, ok=False, result=None, error=f"child process not started: {exc}",
                                         redelivered=False)
                return
        if child.status.finished:  # asked again by the parent's sweep: its answer may have been lost
            await self._committer.publish(child_id, [self._committer.item_done(child)])

    async def _item_in_flight(self, item: ParentRef) -> bool:
        rows = await self._items.fan_out_items(item.process_id, item.group, after=item.index - 1, limit=1)
        return bool(rows) and rows[0].index == item.index and rows[0].status == "dispatched"

    async def complete_item(self, item: ParentRef, *, ok: bool, result: Any, error: str | None,
                            redelivered: bool) -> None:
        """Record one item's end; publish the item it releases and, if it decided the fan-out, the join."""
        done = await self._items.complete_item(item.process_id, item.group, item.index, ok=ok, result=result,
                                               error=error, now=self._clock.now())
        if done is None:
            log.debug("item of an unknown fan-out dropped", process_id=item.process_id, group=item.group,
                      index=item.index)
            return
        if done.applied and self._observers:
            self._observers.emit(Observer.fan_out_items, started=int(done.release is not None), finished=1)
        if not done.applied and not redelivered:
            return  # a fresh duplicate: its first copy published what followed
        if done.release is None and done.state.decided is None:
            return
        doc = await self._load(item.process_id, item.case)
        wait = doc.waiting
        if not (doc.status is Status.WAITING and doc.version == item.group and isinstance(wait, FanOutWait)):
            return  # the parent moved on (cancelled, timed out): nothing more to send
        messages: list[OutboxMessage] = []
        if done.release is not None:
            messages.append(dispatch_message(self._signer, process_id=item.process_id, case=item.case,
                                             resume=wait.resume, group=item.group, index=done.release.index,
                                             spec=done.release.spec))
        if done.state.decided is not None:
            messages.append(join_message(item.process_id, item.case, wait.resume, item.group))
        await self._committer.publish(item.process_id, messages)

    async def join(self, doc: ProcessDocument, wait: FanOutWait, now: float) -> None:
        """The parent's fan-out is decided (or its time is up): run the resuming stage once with the results."""
        state = await self._items.fan_out_state(doc.process_id, wait.group)
        if state is None or (state.decided is None and (wait.deadline is None or now < wait.deadline)):
            return  # not decided yet: a fired timer came early; the completions will send the join
        joined = fan_in(state, await self._items.fan_out_items(doc.process_id, wait.group))
        if state.decided is None:
            reason = (f"fan-out not finished within {wait.timeout_s or 0:g} s ({state.done + state.failed} of "
                      f"{state.total} items done)")
        elif state.decided == "failed":
            reason = failure_reason(state, joined.errors)
        else:
            await self._stages.run(doc, wait.resume, JoinResumed(group=wait.group), fan_in=joined)
            return
        await self._committer.commit(doc, self._planner.fan_out_failed(doc, wait, reason, now=now))

    async def fan_in_of(self, process_id: str, resumed: Resumed | None) -> FanIn | None:
        """The joined results a retried joining stage sees again (read from the item rows)."""
        if not isinstance(resumed, JoinResumed):
            return None
        state = await self._items.fan_out_state(process_id, resumed.group)
        return None if state is None else fan_in(state, await self._items.fan_out_items(process_id, state.group))

    async def sweep(self, doc: ProcessDocument, wait: FanOutWait, now: float) -> list[OutboxMessage]:
        """The safety net of a fan-out: re-send the join if it is decided, else re-dispatch items that have been
        running longer than the relay grace (their replies or children may have been lost with a worker)."""
        state = await self._items.fan_out_state(doc.process_id, wait.group)
        if state is None or state.decided is not None or (wait.deadline is not None and now >= wait.deadline):
            return [join_message(doc.process_id, doc.case, wait.resume, wait.group)]
        stale = await self._items.fan_out_items(doc.process_id, wait.group, status="dispatched", limit=state.window,
                                                updated_before=now - self._relay_grace_s)
        return [
            dispatch_message(self._signer, process_id=doc.process_id, case=doc.case, resume=wait.resume,
                             group=wait.group, index=row.index, spec=row.spec)
            for row in stale
        ]

    async def _load(self, process_id: str, case: str) -> ProcessDocument:
        return await load_process(self._documents, process_id, case)


async def load_process(store: DocumentStore, process_id: str, case: str) -> ProcessDocument:
    """The document a message names; ``MessageError`` (to park it) if there is none, or of another case."""
    doc = await store.load(process_id)
    if doc is None:
        raise MessageError(f"no process {process_id!r} (never created, or expired)")
    if doc.case != case:
        raise MessageError(f"process {process_id!r} is of case {doc.case!r}, not {case!r}")
    return doc
