"""The observer seam: hooks the engine and the worker call at each point of a transition.

In the style of Dramatiq's middleware: subclass ``Observer``, override the hooks you need, and pass instances
to ``Stageflow(..., observers=[...])`` (metrics, traces and audit logs plug in here). Hooks are synchronous and
must not block or raise: they count, record or log. With no observers the engine skips the calls entirely
(``if observers:`` on a tuple, before any argument is built), so the seam costs nothing when unused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Concatenate, Literal, ParamSpec

import structlog

from framework.document import ProcessDocument
from framework.state import HistoryEntry, ResendWait, RetryWait

log = structlog.get_logger("stageflow.observers")
P = ParamSpec("P")

# Why a message was parked, as a low-cardinality class (the free text is in the parked message's headers).
ParkKind = Literal["malformed", "forged", "unknown_case", "poison"]


class Observer:
    """Every hook does nothing by default."""

    def process_started(self, doc: ProcessDocument) -> None:
        """A new process was created (not called for a start that found its client key taken)."""

    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        """``doc`` (the new version) and its history entry were committed; its outbox is about to be published.
        A retry (``doc.waiting`` is a ``RetryWait`` or ``ResendWait``) is a transition like the others."""

    def retry_scheduled(self, doc: ProcessDocument, wait: RetryWait | ResendWait) -> None:
        """A failed stage (``RetryWait``) or service call (``ResendWait``) will be tried again at ``wait.until``;
        called after the transition that scheduled it was committed."""

    def stage_failed(self, doc: ProcessDocument, stage: str, reason: str, *, attempt: int, retryable: bool) -> None:
        """An attempt of ``stage`` raised or timed out (before its failure was planned and committed)."""

    def message_dropped(self, key: str, reason: str) -> None:
        """A duplicate or stale message was recognised and dropped (``key`` names it)."""

    def message_parked(self, queue: str, reason: str, *, kind: ParkKind) -> None:
        """A message was set aside on the parked queue with ``reason``; ``kind`` classes it (``ParkKind``)."""

    def isolated_run(self, key: str, runs: int) -> None:
        """A redelivered message runs alone for the ``runs``-th time (a poison suspect)."""

    def due_work(self, published: int, *, lag_s: float, overdue: int) -> None:
        """One pass of the due-work loop published ``published`` messages; it found ``overdue`` items past
        their due time (at most a page), the oldest ``lag_s`` late."""

    def message_received(self, queue: str, headers: Mapping[str, Any]) -> None:
        """A delivery from ``queue`` is about to be handled, in its own task (its headers as received)."""

    def message_handled(self) -> None:
        """The delivery this task received was handled (acked, parked or left for redelivery)."""

    def publishing(self, headers: MutableMapping[str, Any]) -> None:
        """Messages are about to be published with ``headers``, in the task that publishes them: add to them."""

    def committing(self, doc: ProcessDocument) -> ProcessDocument:
        """``doc`` is about to be written (a transition, or a new process): return it, or the document to write
        in its place, in the same single write (tracing returns it with its trace context). Called only on the
        observers that override it."""
        return doc

    def publishing_due(self, doc: ProcessDocument, headers: MutableMapping[str, Any], *, waited_s: float) -> None:
        """The due-work loop, with no delivery of its own, is about to publish messages of ``doc`` (a timer
        fired, a fan-out swept, an outbox relayed) ``waited_s`` after its last transition: add to ``headers``."""

    def fan_out_items(self, *, started: int, finished: int) -> None:
        """Fan-out items were dispatched (``started``: a fan-out's first window, or one released by a
        completion) or recorded as done (``finished``: a completion applied for the first time)."""


class Observers(tuple[Observer, ...]):
    """The observers of one engine. ``emit(Observer.hook, ...)`` calls that hook on each of them (the
    hook's own signature types the arguments); a failing observer is logged, never raised."""

    stamping: tuple[Observer, ...]  # those that override ``committing``: an empty tuple costs one test per write

    def __new__(cls, observers: Sequence[Observer] = ()) -> Observers:
        made = super().__new__(cls, observers)
        made.stamping = tuple(o for o in observers if type(o).committing is not Observer.committing)
        return made

    def stamp(self, doc: ProcessDocument) -> ProcessDocument:
        """``doc`` as the stamping observers would have it written (a failing one is logged and skipped)."""
        for observer in self.stamping:
            try:
                doc = observer.committing(doc)
            except Exception:
                log.exception("observer failed", hook="committing", observer=type(observer).__name__)
        return doc

    def emit(self, hook: Callable[Concatenate[Observer, P], None], *args: P.args, **kwargs: P.kwargs) -> None:
        name = hook.__name__
        for observer in self:
            try:
                getattr(observer, name)(*args, **kwargs)
            except Exception:
                log.exception("observer failed", hook=name, observer=type(observer).__name__)
