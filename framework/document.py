"""The process document: the whole state of one process, written once per transition.

``version`` counts committed transitions and is the compare-and-set key: a message for transition N
applies only while the document is at version N, so duplicates and stale messages are a comparison,
not a lookup. ``outbox`` holds the messages the last transition produced; they are published after the
commit and re-published by the relay if a worker died in between (their ids are deterministic, so a
re-publish is a duplicate that the version check drops).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from framework.state import Event, Failure, Wait, due_time, wait_from_json


class Status(enum.StrEnum):
    RUNNING = "running"  # a stage is due or being run
    WAITING = "waiting"  # for a service reply, a timer (wait, retry backoff, start date), a re-send or an event
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message a transition produced: ``queue`` is "inner" or "command:<api>"; ``body`` is JSON text."""

    queue: str
    message_id: str
    body: str


@dataclass(frozen=True, slots=True)
class ParentRef:
    """A child process's place: item ``index`` of fan-out ``group`` of process ``process_id``."""

    process_id: str
    case: str
    group: int
    index: int


@dataclass(slots=True)
class ProcessDocument:
    process_id: str
    case: str
    case_version: int
    status: Status
    input: dict[str, Any]
    stage: str | None
    version: int
    created_at: float
    updated_at: float
    client_key: str | None = None
    store: dict[str, Any] = field(default_factory=dict)
    waiting: Wait | None = None
    result: Any = None
    error: Failure | None = None
    ended_at: float | None = None
    attempts: int = 0  # failed attempts of the current stage (or service call) so far
    failures: list[Failure] = field(default_factory=list)  # failures the process went on from
    parent: ParentRef | None = None  # a child process: its place in its parent's fan-out
    outbox: list[OutboxMessage] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # events received (``framework.signals``), bounded
    search: dict[str, Any] = field(default_factory=dict)  # search attributes (``framework.search``)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (slotted) dataclasses and str enums natively

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProcessDocument:
        data = orjson.loads(raw)
        if "trace" in data:  # written with tracing on
            cls = TracedDocument
        data["status"] = Status(data["status"])
        data["outbox"] = [OutboxMessage(m["queue"], m["message_id"], m["body"]) for m in data["outbox"]]
        data["waiting"] = wait_from_json(data["waiting"])
        if data["error"] is not None:
            data["error"] = Failure.from_json(data["error"])
        data["failures"] = [Failure.from_json(f) for f in data["failures"]]
        data["events"] = [Event(**e) for e in data.get("events", ())]  # absent in older documents
        if data["parent"] is not None:
            data["parent"] = ParentRef(**data["parent"])
        return cls(**data)

    def timer_due(self) -> float | None:
        """When the current wait ends by itself: a timer's ``until`` or a reply's or fan-out's ``deadline``."""
        return due_time(self.waiting)

    def due_at(self, relay_grace_s: float) -> float | None:
        """When a worker must look at this document without being told: to fire its timer, or to
        re-publish an outbox that may have been lost with a crashed worker. A finished child's last message
        (its result for the parent) is not relayed from here: the parent's fan-out sweep asks again."""
        if self.status.finished:
            return None
        relay = _relay_at(self.updated_at, relay_grace_s) if self.outbox else None
        times = [t for t in (self.timer_due(), relay) if t]
        return min(times) if times else None

    def public_view(self) -> dict[str, Any]:
        """The document as users see it (status API, CLI): everything but the raw outbox."""
        data: dict[str, Any] = orjson.loads(self.to_json())  # a deep copy as JSON: several times faster than asdict()
        del data["outbox"]
        return data


@dataclass(slots=True)
class TracedDocument(ProcessDocument):
    """A document written with tracing on: ``trace`` is the W3C trace context (``traceparent``, maybe
    ``tracestate``) of the span whose transition wrote it, so a timer, a retry or the relay continues that trace.
    A subclass rather than an optional field: with tracing off a document is written without a ``trace`` key and
    costs nothing more (``dataclasses.replace`` keeps the class, so the planner's copies stay traced)."""

    trace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, doc: ProcessDocument, trace: dict[str, str]) -> TracedDocument:
        return cls(**{name: getattr(doc, name) for name in ProcessDocument.__dataclass_fields__}, trace=trace)


def _relay_at(updated_at: float, relay_grace_s: float) -> float:
    """The grace, rounded up to a quarter of it: the transitions of a busy process then keep the same
    ``due_at``, so PostgreSQL can update its row in place (a HOT update, no new index entries). The relay
    is only the net for a lost publish; a quarter of the grace later does not matter."""
    step = relay_grace_s / 4
    return math.ceil((updated_at + relay_grace_s) / step) * step
