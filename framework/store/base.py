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
