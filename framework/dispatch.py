"""Applying one typed message to its process: the ``match`` at the heart of the worker.

* ``RunStage`` runs a stage that is due, or fires the wait its process is in (a timer, a retry, a re-send,
  a reply deadline, a fan-out's join);
  or an event's deadline;
* ``Reply`` resumes the stage waiting for it, or fails the call (to be retried, or for good);
* ``StartChild`` and ``ItemDone`` go to the fan-out coordinator.

A message for another version of the document than its own is stale or a duplicate, and is dropped: the
comparison of transition numbers is all it takes (DESIGN.md, point 2). A redelivered message whose transition
is already committed means its worker died after the commit, maybe before publishing: its outbox is
re-published at once rather than after the relay's grace.
"""

from __future__ import annotations

import structlog

from framework.clock import Clock
from framework.committer import Committer
from framework.coordinator import FanOutCoordinator, load_process
from framework.document import ParentRef, ProcessDocument, Status
from framework.errors import MessageError
from framework.inbound import Inbound, Reply
from framework.messages import ItemDone, RunStage, StartChild
from framework.observers import Observer, Observers
from framework.planner import Planner
from framework.stages import StageRunner
from framework.state import (
    EventWait,
    FanOutWait,
    ReplyResumed,
    ResendWait,
    RetryWait,
    ServiceReply,
    ServiceWait,
    TimerWait,
    due_time,
    fire_target,
)
from framework.store.protocols import DocumentStore

log = structlog.get_logger("stageflow.engine")


class Dispatcher:
    def __init__(
        self, *, store: DocumentStore, planner: Planner, committer: Committer, stages: StageRunner,
        fanouts: FanOutCoordinator, clock: Clock, observers: Observers,
    ) -> None:
        self._store = store
        self._planner = planner
        self._committer = committer
        self._stages = stages
        self._fanouts = fanouts
        self._clock = clock
        self._observers = observers

    async def apply(self, message: Inbound, *, redelivered: bool = False) -> None:
        """Apply one message. Raises ``MessageError`` or ``UnknownCaseError`` for a message to park."""
        self._planner.cases.latest(message.case)  # an unknown case is refused before any read
        match message:
            case RunStage():
                await self._run_stage(message, redelivered)
            case Reply():
                await self._reply(message, redelivered)
            case StartChild():
                await self._fanouts.start_child(message)
            case ItemDone(process_id=process_id, case=case, group=group, index=index):
                await self._fanouts.complete_item(ParentRef(process_id, case, group, index), ok=message.ok,
                                                  result=message.result, error=message.error, redelivered=redelivered)

    async def _run_stage(self, message: RunStage, redelivered: bool) -> None:
        doc = await load_process(self._store, message.process_id, message.case)
        # Stages are those of the version the process started with, which may not be the newest.
        if self._planner.case_of(doc).stage_named(message.stage) is None:
            raise MessageError(f"case {doc.case!r} version {doc.case_version} has no stage {message.stage!r}")
        if doc.version != message.transition:
            await self._drop_stale(doc, message.transition, redelivered, message.key)
            return
        if doc.status is Status.RUNNING and doc.stage == message.stage:
            await self._stages.run(doc, message.stage)
            return
        wait, now = doc.waiting, self._clock.now()
        if doc.status is not Status.WAITING or fire_target(wait) != message.stage:
            log.debug("message does not apply", process_id=doc.process_id, status=doc.status)
            return
        if isinstance(wait, FanOutWait):  # its join (or its deadline)
            await self._fanouts.join(doc, wait, now)
            return
        due = due_time(wait)
        if due is None or now < due:
            # e.g. a timer fired by a worker whose clock runs ahead: the due-work loop fires it again later
            log.debug("timer not due yet", process_id=doc.process_id, due=due)
            return
        match wait:
            case TimerWait():
                await self._stages.run(doc, message.stage)
            case RetryWait(resumed=resumed):  # the next attempt sees what resumed the failed one
                fan_in = await self._fanouts.fan_in_of(doc.process_id, resumed)
                await self._stages.run(doc, message.stage, resumed, fan_in=fan_in)
            case ResendWait():
                await self._committer.commit(doc, self._planner.resend(doc, wait, now=now))
            case ServiceWait():  # the reply deadline passed
                await self._committer.commit(doc, self._planner.reply_overdue(doc, wait, now=now))
            case EventWait():  # the event's deadline passed
                await self._committer.commit(doc, self._planner.event_overdue(doc, wait, now=now))

    async def _reply(self, message: Reply, redelivered: bool) -> None:
        """A reply applies while the process waits for its taskId (also while a re-send of the same command is
        pending); afterwards it is a duplicate and is dropped."""
        ref, reply = message.ref, message.message
        if ref.item is not None:  # one item of a fan-out (``ref.transition`` names the fan-out)
            await self._fanouts.complete_item(ParentRef(ref.process_id, ref.case, ref.transition, ref.item),
                                              ok=reply.ok, result=reply.data, error=reply.error,
                                              redelivered=redelivered)
            return
        doc = await load_process(self._store, ref.process_id, ref.case)
        wait = doc.waiting
        if doc.status is not Status.WAITING or not isinstance(wait, ServiceWait | ResendWait) \
                or wait.task_id != reply.task_id:
            await self._drop_stale(doc, ref.transition, redelivered, message.key)
            return
        if reply.ok:
            resumed = ReplyResumed(reply=ServiceReply(api=ref.api, ok=True, data=reply.data))
            await self._stages.run(doc, wait.resume, resumed)
            return
        plan = self._planner.reply_error(doc, wait, reply.error, retryable=reply.retryable, now=self._clock.now())
        await self._committer.commit(doc, plan)

    async def _drop_stale(self, doc: ProcessDocument, transition: int, redelivered: bool, key: str) -> None:
        # Only on redelivery: a fresh duplicate must not make every later message of the process twice.
        recovered = redelivered and doc.version == transition + 1 and bool(doc.outbox)
        if recovered:
            await self._committer.publish(doc.process_id, doc.outbox)
        log.debug("stale message dropped", process_id=doc.process_id, transition=transition, version=doc.version,
                  recovered=recovered)
        if self._observers:
            self._observers.emit(Observer.message_dropped, key, "stale" if doc.version > transition else "early")
