"""The data the store contract speaks in: filters, list pages, jobs, summaries and schedule rows.

Plain values with no I/O, shared by every backend and by the gateway, CLI and jobs that call them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """Which processes an operator action (or a list) is about; ``None`` means any."""

    case: str | None = None
    status: str | None = None
    failed_stage: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    search: tuple[tuple[str, Any], ...] = ()  # (name, value): search attributes equal to these (``framework.search``)


# ``status`` may also be this derived one: waiting to try a failed stage or service call again.
RETRYING = "retrying"

# A list page's position: the (created_at, process_id) of its last row. Lists are ordered newest first.
PageKey = tuple[float, str]


@dataclass(slots=True)
class Job:
    """A background operation (bulk reprocess) and its progress, kept in the store so that any gateway (or
    the CLI) can show it. ``owner`` is the gateway or CLI running it; ``updated_at`` is its heartbeat."""

    job_id: str
    kind: str
    params: dict[str, Any]
    owner: str
    created_at: float
    updated_at: float
    status: str = "running"  # running, completed, failed, interrupted
    total: int | None = None  # matches when the job started, if counted in time
    done: int = 0  # processes the job acted on
    failed: int = 0  # processes it could not act on (see ``errors``)
    cursor: str | None = None  # the last process id handled: a resumed job goes on after it
    errors: list[dict[str, Any]] = field(default_factory=list)  # the newest few {process_id, reason}
    error: str | None = None  # why the job itself stopped early
    ended_at: float | None = None

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        return cls(**orjson.loads(raw))


# The keys of ``waiting`` a list row shows (see ``summary``), and of ``error``.
WAITING_SUMMARY_KEYS = ("kind", "reason", "stage", "api", "name", "until", "deadline", "attempt")
ERROR_SUMMARY_KEYS = ("stage", "reason", "at")


def summary(
    *, process_id: str, case: str, case_version: int, status: str, stage: str | None, client_key: str | None,
    created_at: float, updated_at: float, ended_at: float | None, waiting: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """A process as one row of a list: enough to choose which one to open, never the whole document."""
    return {
        "process_id": process_id, "case": case, "case_version": case_version, "status": status, "stage": stage,
        "client_key": client_key, "created_at": created_at, "updated_at": updated_at, "ended_at": ended_at,
        "waiting": None if waiting is None else {k: waiting[k] for k in WAITING_SUMMARY_KEYS if k in waiting},
        "error": None if error is None else {k: error[k] for k in ERROR_SUMMARY_KEYS if k in error},
    }


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule's state in the store. ``definition`` and ``timing`` are canonical JSON written by the
    workers' sync (see ``framework.scheduler``); ``next_fire_at`` is the oldest tick not fired yet."""

    name: str
    definition: str
    timing: str
    next_fire_at: float
    paused: bool
    last_tick: float | None
    last_fired_at: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """A stored workflow (a blueprint business users manage at run time): whether new processes may start on
    it, its newest version, and who made it and last changed it, when."""

    name: str
    active: bool
    latest: int
    created_at: float
    created_by: str
    updated_at: float
    updated_by: str


@dataclass(frozen=True, slots=True)
class WorkflowVersion:
    """One immutable version of a workflow: the blueprint (JSON text) and who saved it, when."""

    name: str
    version: int
    definition: str
    created_at: float
    created_by: str
GONE_AFTER_BEATS = 3  # a worker whose row was not refreshed for this many of its heartbeats is gone


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A running worker as the registry keeps it: what its release carries, refreshed every ``heartbeat_s``."""

    worker_id: str  # host:pid:short uuid
    release: str
    carries: tuple[tuple[str, int], ...]  # the (case, version) pairs it runs, sorted
    started_at: float
    last_seen: float
    heartbeat_s: float


@dataclass(frozen=True, slots=True)
class LiveGroup:
    """How many live processes share a (case, version) and, by the query, a ``reach`` or a (stage, waiting
    kind); the fields the query does not group by are None."""

    case: str
    version: int
    processes: int
    reach: str | None = None
    stage: str | None = None
    waiting: str | None = None  # the wait's kind (timer, service, resend, fan_out, event); None while running
