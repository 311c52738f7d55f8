"""The engine: one transition at a time, committed once, published after the commit.

A transition: a delivery is parsed into a typed message (``framework.inbound``), the dispatcher loads the
process document and checks the message against it (a duplicate or stale message stops here), the stage runs
(``framework.stages``), the planner makes the next document (``framework.planner``), and the committer writes
it with its outbox in one compare-and-set and publishes the outbox with confirms (``framework.committer``).
The worker acks the message afterwards. A crash anywhere in between is safe:

* before the commit: the message is redelivered and the stage runs again, with what resumed it;
* after the commit, before publishing: the redelivered message finds the document one version ahead and
  re-publishes its outbox; if the message is lost too, the due-work loop re-publishes it after
  ``relay_grace_s``;
* after publishing, before the ack: the redelivery is a stale duplicate and is dropped.

This class only wires the parts together, each with one job: starting (``Starter``), dispatching
(``Dispatcher``), fan-out coordination (``FanOutCoordinator``), poison classification (``PoisonJudge``), due
work and expiry (``DueWork``), schedules (``Scheduler``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from framework.broker.base import Broker
from framework.callbacks import CallbackTokens
from framework.case import BusinessCase
from framework.clock import Clock, SystemClock
from framework.committer import Committer
from framework.coordinator import FanOutCoordinator
from framework.dispatch import Dispatcher
from framework.document import ProcessDocument
from framework.due import DueWork
from framework.inbound import InboundParser
from framework.messages import DEFAULT_MAX_MESSAGE_BYTES
from framework.observers import Observer, Observers
from framework.planner import Plan, Planner
from framework.poison import PoisonJudge
from framework.registry import CaseRegistry
from framework.scheduler import Scheduler, collect_schedules
from framework.signing import MessageSigner
from framework.stages import StageRunner
from framework.starter import Starter
from framework.store.base import ProcessStore
from framework.taskid import TaskIdSigner

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
        observers: Sequence[Observer] = (),
    ) -> None:
        self.cases = cases if isinstance(cases, CaseRegistry) else CaseRegistry(cases)
        self.store = store
        self.broker = broker
        self.signer = signer
        self.clock = clock or SystemClock()
        self.observers = Observers(observers)
        self.messages = MessageSigner(signer.secret_keys)  # signs inner messages as they leave (framework.signing)
        self.inbound = InboundParser(signer, max_message_bytes=max_message_bytes)
        self.planner = Planner(self.cases, signer, max_message_bytes=max_message_bytes)
        self.committer = Committer(
            store=store, broker=broker, planner=self.planner, clock=self.clock, relay_grace_s=relay_grace_s,
            process_ttl_s=process_ttl_s, max_message_bytes=max_message_bytes, observers=self.observers,
            messages=self.messages,
        )
        self.start_process = Starter(store=store, planner=self.planner, committer=self.committer, clock=self.clock,
                                     relay_grace_s=relay_grace_s, observers=self.observers)
        self.callbacks = CallbackTokens(signer.secret_keys)
        stages = StageRunner(planner=self.planner, committer=self.committer, clock=self.clock,
                             observers=self.observers, tokens=self.callbacks)
        fanouts = FanOutCoordinator(
            documents=store, items=store, signer=signer, planner=self.planner, committer=self.committer, stages=stages,
            starter=self.start_process, clock=self.clock, relay_grace_s=relay_grace_s, observers=self.observers,
        )
        self._dispatcher = Dispatcher(store=store, planner=self.planner, committer=self.committer, stages=stages,
                                      fanouts=fanouts, clock=self.clock, observers=self.observers)
        self._poison = PoisonJudge(store=store, planner=self.planner, committer=self.committer, fanouts=fanouts,
                                   clock=self.clock)
        self.schedules = Scheduler(store=store, clock=self.clock, start=self.start_process,
                                   schedules=collect_schedules(self.cases))
        # ``apply(message, redelivered=)`` applies one parsed message (``MessageError``/``UnknownCaseError``: park
        # it); ``condemn(message, reason)`` fails what a poison message belongs to. Bound once, not wrapped: the
        # worker calls them per message, and a wrapper would add a coroutine frame to each.
        self.apply = self._dispatcher.apply
        self.condemn = self._poison.condemn
        self._due = DueWork(store=store, committer=self.committer, fanouts=fanouts, schedules=self.schedules,
                            clock=self.clock, relay_grace_s=relay_grace_s, observers=self.observers)

    async def start(
        self, case: str | type[BusinessCase], input: Any = None, *, client_key: str | None = None,
        start_at: datetime | float | None = None,
    ) -> ProcessDocument:
        """Validate ``input`` and create a process of ``case``; its first stage is published after the commit.

        With a ``client_key``, starting again returns the existing process (and raises
        ``ProcessConflictError`` if the input differs): one key never creates two processes. With a
        ``start_at`` in the future (an aware datetime or epoch seconds) the process waits until then.
        """
        doc, _ = await self.start_process(case, input, client_key=client_key, start_at=start_at)
        return doc

    async def commit(self, doc: ProcessDocument, plan: Plan) -> bool:
        """Commit an operator's planned transition of ``doc``; False if the document moved on, and
        ``InvalidInputError`` (nothing changed) if the store cannot keep what the operator gave."""
        return await self.committer.commit(doc, plan, operator=True)

    async def fire_due(self, *, limit: int = 200) -> int:
        """One pass of due work: timers, overdue outboxes, fan-out sweeps, schedule ticks (``DueWork``)."""
        return await self._due.fire_due(limit=limit)

    async def expire(self, *, limit: int = 1000) -> int:
        """Delete finished processes whose time to live has passed; returns how many."""
        return await self._due.expire(limit=limit)
