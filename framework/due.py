"""The due-work loop's work: fire timers, re-publish overdue outboxes, sweep fan-outs, expire old processes.

Time lives in the store: a wait, a retry backoff, a start date or a reply deadline is the document's
``due_at``. Every worker calls ``fire_due`` in a loop; a due document is claimed with a compare-and-set on
its due time, so with many workers one publishes the message that fires it, and the transition it causes is
version-checked. The claim pushes the due time out (doubling, capped at an hour) in case the message
published here is lost too; the transition it causes sets a fresh due time anyway.
"""

from __future__ import annotations

import structlog

from framework.clock import Clock
from framework.committer import Committer
from framework.coordinator import FanOutCoordinator
from framework.document import OutboxMessage
from framework.observers import Observer, Observers
from framework.planner import run_stage_message
from framework.scheduler import Scheduler
from framework.state import FanOutWait, fire_target
from framework.store.protocols import DocumentStore

log = structlog.get_logger("stageflow.engine")

_DUE_MAX_INTERVAL_S = 3600.0


class DueWork:
    def __init__(
        self, *, store: DocumentStore, committer: Committer, fanouts: FanOutCoordinator, schedules: Scheduler,
        clock: Clock, relay_grace_s: float, observers: Observers,
    ) -> None:
        self._store = store
        self._committer = committer
        self._fanouts = fanouts
        self._schedules = schedules
        self._clock = clock
        self._relay_grace_s = relay_grace_s
        self._observers = observers

    async def fire_due(self, *, limit: int = 200) -> int:
        """Do the work that is due (and start the processes of due schedule ticks); how much was done."""
        now = self._clock.now()
        acted = 0
        due = await self._store.due(now, limit)
        for doc in due:
            timer = doc.timer_due()
            wait = doc.waiting
            # A fan-out is swept at a steady pace while its items run, however long; anything else backs off.
            pace = self._relay_grace_s if isinstance(wait, FanOutWait) else min(
                max(self._relay_grace_s, now - doc.updated_at), _DUE_MAX_INTERVAL_S)
            next_at = min(now + pace, timer) if timer is not None and timer > now else now + pace
            if not await self._store.claim_due(doc.process_id, doc.version, now, next_at):
                continue
            target = fire_target(wait)
            messages: list[OutboxMessage]
            if isinstance(wait, FanOutWait):
                messages = await self._fanouts.sweep(doc, wait, now)
            elif timer is not None and timer <= now and target is not None:
                # The transition the timer causes supersedes the outbox (it writes a new one).
                messages = [run_stage_message(doc, target, kind="fire")]
            elif now >= doc.updated_at + self._relay_grace_s:
                messages = list(doc.outbox)
            else:
                messages = []
            if messages:
                await self._committer.publish(doc.process_id, messages, due=doc, waited_s=now - doc.updated_at)
                acted += 1
        if acted:
            log.info("due work published", count=acted)
        if self._observers:  # also when nothing is due: the lag and the overdue count go back to zero
            oldest = min((d.due_at(self._relay_grace_s) or now for d in due), default=now)
            self._observers.emit(Observer.due_work, acted, lag_s=max(0.0, now - oldest), overdue=len(due))
        return acted + await self._schedules.fire_due()

    async def expire(self, *, limit: int = 1000) -> int:
        """Delete finished processes whose time to live has passed; returns how many."""
        deleted = await self._store.delete_expired(self._clock.now(), limit)
        if deleted:
            log.info("expired processes deleted", count=deleted)
        return deleted
