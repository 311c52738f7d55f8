"""Poison classification: which process a message that keeps crashing or killing workers condemns.

Only the message a process is waiting on condemns it: a stale copy is just parked. A fan-out item's message
fails its item (the join policy decides for the process); left in flight, the sweep would send it again.
The worker counts isolated runs and parks the message; this module decides what it means for the process.
"""

from __future__ import annotations

from framework.clock import Clock
from framework.committer import Committer
from framework.coordinator import FanOutCoordinator
from framework.document import ParentRef
from framework.inbound import Inbound, Reply
from framework.messages import ItemDone, RunStage, StartChild
from framework.planner import Planner
from framework.state import ResendWait, ServiceWait
from framework.store.protocols import DocumentStore


class PoisonJudge:
    def __init__(self, *, store: DocumentStore, planner: Planner, committer: Committer,
                 fanouts: FanOutCoordinator, clock: Clock) -> None:
        self._store = store
        self._planner = planner
        self._committer = committer
        self._fanouts = fanouts
        self._clock = clock

    async def condemn(self, message: Inbound, reason: str) -> None:
        """``message`` is poison: fail the process (or the fan-out item) it belongs to, if it is still current."""
        match message:
            case Reply(ref=ref) if ref.item is not None:
                item = ParentRef(ref.process_id, ref.case, ref.transition, ref.item)
            case StartChild() | ItemDone():
                item = ParentRef(message.process_id, message.case, message.group, message.index)
            case _:
                await self._condemn_process(message, reason)
                return
        await self._fanouts.complete_item(item, ok=False, result=None, error=reason, redelivered=False)

    async def _condemn_process(self, message: RunStage | Reply, reason: str) -> None:
        process_id = message.process_id if isinstance(message, RunStage) else message.ref.process_id
        doc = await self._store.load(process_id)
        if doc is None or doc.status.finished:
            return
        if isinstance(message, RunStage):
            current = doc.version == message.transition
        else:
            wait = doc.waiting
            current = isinstance(wait, ServiceWait | ResendWait) and wait.task_id == message.message.task_id
        if current:
            await self._committer.commit(doc, self._planner.poisoned(doc, reason, now=self._clock.now()))
