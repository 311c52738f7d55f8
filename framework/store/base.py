"""The store contract: where process documents live.

A store keeps one document per process and an append-only history of its transitions. Its one hot
operation is ``commit``: a compare-and-set write of the whole document (new state and outbox) together
with the transition's history entry, applied only if the document is still at ``expected_version``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import orjson

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemCompletion, ItemRow, NewFanOut


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """Which processes an operator action (or a list) is about; ``None`` means any."""

    case: str | None = None
    status: str | None = None
    failed_stage: str | None = None
    created_after: float | None = None
    created_before: float | None = None


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


def summary(
    *, process_id: str, case: str, case_version: int, status: str, stage: str | None, client_key: str | None,
    created_at: float, updated_at: float, ended_at: float | None, waiting: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """A process as one row of a list: enough to choose which one to open, never the whole document."""
    return {
        "process_id": process_id, "case": case, "case_version": case_version, "status": status, "stage": stage,
        "client_key": client_key, "created_at": created_at, "updated_at": updated_at, "ended_at": ended_at,
        "waiting": None if waiting is None else {
            k: waiting[k] for k in ("kind", "reason", "stage", "api", "until", "deadline", "attempt") if k in waiting
        },
        "error": None if error is None else {k: error[k] for k in ("stage", "reason", "at") if k in error},
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


class ProcessStore(ABC):
    """Async contract every store implements. Constructors do no I/O: call ``open()`` (or ``async with``)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent, safe with many workers starting)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create(
        self, doc: ProcessDocument, entry: dict[str, Any], *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        """Insert a new process. If its ``(case, client_key)`` is taken, return ``(existing, False)``."""

    @abstractmethod
    async def load(self, process_id: str) -> ProcessDocument | None: ...

    @abstractmethod
    async def commit(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        """Write ``doc`` (already at ``expected_version + 1``) and its history entry if the stored document
        is still at ``expected_version``. Return False, writing nothing, if it is not.

        ``due_at`` is when a worker must look at the document by itself (timer, overdue outbox);
        ``expires_at`` when a finished process may be deleted."""

    @abstractmethod
    async def history(self, process_id: str) -> list[dict[str, Any]]:
        """The history entries of a process, oldest first."""

    async def load_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]] | None:
        """The document and its history (oldest first), or None if there is no such process. A store whose
        reads are round trips overrides this to read both in one."""
        doc = await self.load(process_id)
        return None if doc is None else (doc, await self.history(process_id))

    @abstractmethod
    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        """How many processes are in each status (of one case, or of all)."""

    @abstractmethod
    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        """Documents whose ``due_at`` is at or before ``now``, earliest first."""

    @abstractmethod
    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        """Move a due document's ``due_at`` to ``next_at`` if it is still at ``version`` and due; True if this
        caller won (with many workers, exactly one does)."""

    @abstractmethod
    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        """Ids of processes matching ``where``, in id order, after ``after`` (keyset pagination)."""

    @abstractmethod
    async def list_page(
        self, where: ProcessFilter, *, after: PageKey | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], PageKey | None]:
        """Summaries (see ``summary``) of processes matching ``where``, newest first, strictly after ``after``
        in the (created_at DESC, process_id DESC) order; and the key of the last one (None if none).
        Keyset pagination on an index, so a page costs the same on page 1 and page 10 000.
        ``where.status`` may be ``RETRYING``."""

    @abstractmethod
    async def count_by_case_and_status(self) -> list[tuple[str, str, int]]:
        """(case, status, count) for every case and status that has processes."""

    @abstractmethod
    async def recent_stage_durations(self, processes: int) -> list[tuple[str, str, float]]:
        """(case, stage, duration_ms) of every stage run in the history of the ``processes`` newest processes:
        bounded work whatever the table size."""

    @abstractmethod
    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:
        """How many processes match ``where``; None if counting would take longer than ``timeout_s``."""

    # -- background jobs (see framework.jobs) ---------------------------------------------------------------

    @abstractmethod
    async def create_job(self, job: Job) -> None: ...

    @abstractmethod
    async def save_job(self, job: Job) -> bool:
        """Write the job's progress if ``job.owner`` still owns it; False if another one took it over."""

    @abstractmethod
    async def load_job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def list_jobs(self, *, limit: int) -> list[Job]:
        """The newest jobs first."""

    @abstractmethod
    async def claim_job(self, job_id: str, *, owner: str, now: float, from_statuses: tuple[str, ...]) -> Job | None:
        """Make ``owner`` run the job if its status is in ``from_statuses`` (status becomes running); the job,
        or None if it is not in one of them (with many gateways, one claim wins)."""

    @abstractmethod
    async def interrupt_stale_jobs(self, *, stale_before: float, now: float) -> int:
        """Mark running jobs whose heartbeat (``updated_at``) is older than ``stale_before`` interrupted: the
        gateway or CLI running them is gone. How many."""

    @abstractmethod
    async def ping(self) -> None:
        """One cheap round trip; raise ``StoreError`` if the store is not reachable."""

    @abstractmethod
    async def delete_expired(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` finished processes (and their history) whose ``expires_at`` has passed,
        and isolated-run counts untouched for a day."""

    @abstractmethod
    async def count_isolated_run(self, key: str, now: float) -> int:
        """Count one more run of the redelivered message ``key`` on its own; return how many so far.

        Only redelivered messages are counted (a crash made them come back), so the hot path never
        writes here. See the worker's poison handling."""

    @abstractmethod
    async def forget_isolated_runs(self, key: str) -> None:
        """The message ``key`` was settled: drop its count."""

    # -- fan-out items (see framework.fanout) ----------------------------------------------------------

    @abstractmethod
    async def commit_fan_out(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        """``commit`` of a transition that fans out: also writes the fan-out's counter row and all its items
        (the first ``fan_out.released`` of them as dispatched), atomically with the document."""

    @abstractmethod
    async def complete_item(
        self, process_id: str, group: int, index: int, *, ok: bool, result: Any, error: str | None, now: float
    ) -> ItemCompletion | None:
        """Record that a dispatched item finished, update the counters, decide the fan-out (``fanout.complete``)
        and mark the item it releases as dispatched, in one transaction. A duplicate changes nothing. None if
        there is no such fan-out or item (expired, or never made)."""

    @abstractmethod
    async def fan_out_state(self, process_id: str, group: int) -> FanOutState | None: ...

    @abstractmethod
    async def fan_out_items(
        self, process_id: str, group: int, *, status: str | None = None, after: int = -1, limit: int | None = None,
        updated_before: float | None = None,
    ) -> list[ItemRow]:
        """Items of a fan-out in index order, after index ``after``; optionally only those in ``status`` and last
        changed before ``updated_before`` (the sweep's stale dispatched items)."""

    # -- schedules (see framework/scheduler.py) ---------------------------------------------------------

    @abstractmethod
    async def sync_schedule(self, name: str, definition: str, timing: str, next_fire_at: float, now: float) -> None:
        """Insert the schedule, or update its definition. Only a changed ``timing`` resets ``next_fire_at``;
        ``paused`` and the fire history are kept."""

    @abstractmethod
    async def due_schedules(self, names: list[str], now: float) -> list[ScheduleRow]:
        """Schedules among ``names`` that are not paused and whose ``next_fire_at`` is at or before ``now``."""

    @abstractmethod
    async def advance_schedule(
        self, name: str, *, expected_next_fire_at: float, next_fire_at: float, last_tick: float, fired_at: float
    ) -> bool:
        """Compare-and-set: move ``next_fire_at`` on if it is still ``expected_next_fire_at``; True if this
        caller won (with many workers, exactly one does)."""

    @abstractmethod
    async def schedules(self) -> list[ScheduleRow]:
        """Every schedule row, by name."""

    @abstractmethod
    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_fire_at: float | None = None
    ) -> bool:
        """Pause or resume; a resume also sets ``next_fire_at`` (ticks during the pause are not fired).
        False if there is no such schedule."""
