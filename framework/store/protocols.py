"""The store contract, as narrow protocols: where process documents and their side records live.

A component depends on the protocol it uses (the scheduler on ``ScheduleStore``, the jobs on ``JobStore``, the
gateway's lists on ``ProcessQueries``); ``ProcessStore`` is all of them, what a full backend provides and what
the engine is given. The hot operation is ``DocumentStore.commit``: a compare-and-set write of the whole
document (new state and outbox) together with the transition's history entry, applied only if the document
is still at ``expected_version``.

Adding a backend (e.g. MongoDB through PyMongo's ``AsyncMongoClient``):

1. Write one class that implements every method below (subclass ``ProcessStore`` to inherit ``async with``).
   Constructors do no I/O; ``open()`` connects and creates collections and indexes idempotently.
2. Write the list columns a query filters on at ``create``/``commit`` time from
   ``framework.store.derived.derived_columns(doc)`` (never parse ``doc.waiting`` yourself), so that
   ``status=retrying`` is an indexed equality, a list row needs no document and the deploy queries
   (``DeployStore``) read live processes by (case, version) from an index. Keep a record of the schema
   (collections, indexes) your ``open()`` has applied, numbered like ``framework.store.sql.schema``'s
   migrations: each applied once with many workers starting, an unknown (newer) one refused.
3. Translate the driver's "unreachable" errors into ``StoreError`` and refused data into
   ``UnstorableDataError`` at the boundary.
4. Add the backend to the ``store`` fixture of ``tests/test_store_contract.py``: the one contract suite
   (``tests/store_contract.py``) states every promise below; a backend is done when it passes.
"""

from __future__ import annotations

from typing import Any, Protocol, Self, runtime_checkable

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemCompletion, ItemRow, NewFanOut
from framework.state import HistoryEntry
from framework.store.records import (
    Job,
    LiveGroup,
    PageKey,
    ProcessFilter,
    ScheduleRow,
    WorkerRow,
    WorkflowRow,
    WorkflowVersion,
)


@runtime_checkable
class Lifecycle(Protocol):
    """Connecting and closing. ``async with store:`` opens and closes it."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent, safe with many workers starting)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """One cheap round trip; raise ``StoreError`` if the store is not reachable."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@runtime_checkable
class DocumentStore(Protocol):
    """Process documents (with their outbox), their history, their timers and their expiry."""

    async def create(
        self, doc: ProcessDocument, entry: HistoryEntry, *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        """Insert a new process with its first history entry. If its ``(case, client_key)`` is taken, return
        ``(existing, False)`` and write nothing."""

    async def load(self, process_id: str) -> ProcessDocument | None: ...

    async def load_by_key(self, case: str, client_key: str) -> ProcessDocument | None:
        """The process of ``case`` started with ``client_key`` (the unique index), or None."""

    async def commit(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        """Write ``doc`` (already at ``expected_version + 1``) and its history entry if the stored document
        is still at ``expected_version``. Return False, writing nothing, if it is not.

        ``due_at`` is when a worker must look at the document by itself (timer, overdue outbox);
        ``expires_at`` when a finished process may be deleted."""

    async def commit_fan_out(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        """``commit`` of a transition that fans out: also writes the fan-out's counter row and all its items
        (the first ``fan_out.released`` of them as dispatched), atomically with the document."""

    async def history(self, process_id: str) -> list[dict[str, Any]]:
        """The history entries of a process, oldest first (by version)."""

    async def load_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]] | None:
        """The document and its history (oldest first), or None if there is no such process; one round trip
        where the backend can."""

    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        """Documents whose ``due_at`` is at or before ``now``, earliest first."""

    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        """Move a due document's ``due_at`` to ``next_at`` if it is still at ``version`` and due; True if this
        caller won (with many workers, exactly one does)."""

    async def delete_expired(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` finished processes (with their history and fan-outs) whose ``expires_at``
        has passed, and isolated-run counts untouched for a day. How many processes."""


@runtime_checkable
class FanOutStore(Protocol):
    """The items of a fan-out after ``commit_fan_out`` made them (see ``framework.fanout``)."""

    async def complete_item(
        self, process_id: str, group: int, index: int, *, ok: bool, result: Any, error: str | None, now: float
    ) -> ItemCompletion | None:
        """Record that a dispatched item finished, update the counters, decide the fan-out (``fanout.complete``)
        and mark the item it releases as dispatched, in one transaction. A duplicate changes nothing. None if
        there is no such fan-out or item (expired, or never made)."""

    async def fan_out_state(self, process_id: str, group: int) -> FanOutState | None: ...

    async def cancel_items(self, process_id: str, group: int, *, now: float) -> list[ItemRow]:
        """Mark every pending or dispatched item of the fan-out ``cancelled`` (its parent was cancelled), in one
        transaction: none is started or completed after that. The items that were dispatched, before."""

    async def fan_out_items(
        self, process_id: str, group: int, *, status: str | None = None, after: int = -1, limit: int | None = None,
        updated_before: float | None = None,
    ) -> list[ItemRow]:
        """Items of a fan-out in index order, after index ``after``; optionally only those in ``status`` and last
        changed before ``updated_before`` (the sweep's stale dispatched items)."""


@runtime_checkable
class ScheduleStore(Protocol):
    """Cron and interval schedules (see ``framework.scheduler``)."""

    async def sync_schedule(self, name: str, definition: str, timing: str, next_fire_at: float, now: float) -> None:
        """Insert the schedule, or update its definition. Only a changed ``timing`` resets ``next_fire_at``;
        ``paused`` and the fire history are kept."""

    async def due_schedules(self, names: list[str], now: float) -> list[ScheduleRow]:
        """Schedules among ``names`` that are not paused and whose ``next_fire_at`` is at or before ``now``."""

    async def advance_schedule(
        self, name: str, *, expected_next_fire_at: float, next_fire_at: float, last_tick: float, fired_at: float
    ) -> bool:
        """Compare-and-set: move ``next_fire_at`` on if it is still ``expected_next_fire_at``; True if this
        caller won (with many workers, exactly one does)."""

    async def schedules(self) -> list[ScheduleRow]:
        """Every schedule row, by name."""

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_fire_at: float | None = None
    ) -> bool:
        """Pause or resume; a resume also sets ``next_fire_at`` (ticks during the pause are not fired).
        False if there is no such schedule."""


@runtime_checkable
class JobStore(Protocol):
    """Background jobs (bulk reprocess, see ``framework.jobs``) and their progress."""

    async def create_job(self, job: Job) -> None: ...

    async def save_job(self, job: Job) -> bool:
        """Write the job's progress if ``job.owner`` still owns it; False if another one took it over."""

    async def load_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, *, limit: int) -> list[Job]:
        """The newest jobs first."""

    async def claim_job(self, job_id: str, *, owner: str, now: float, from_statuses: tuple[str, ...]) -> Job | None:
        """Make ``owner`` run the job if its status is in ``from_statuses`` (status becomes running, ``error``
        and ``ended_at`` are cleared); the job, or None if it is not in one of them (one claim wins)."""

    async def interrupt_stale_jobs(self, *, stale_before: float, now: float) -> int:
        """Mark running jobs whose heartbeat (``updated_at``) is older than ``stale_before`` interrupted: the
        gateway or CLI running them is gone. How many."""


@runtime_checkable
class ProcessQueries(Protocol):
    """Read-only questions about many processes: the gateway's lists and stats, operator actions' targets."""

    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        """How many processes are in each status (of one case, or of all)."""

    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        """Ids of processes matching ``where``, in id order, after ``after`` (keyset pagination)."""

    async def list_page(
        self, where: ProcessFilter, *, after: PageKey | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], PageKey | None]:
        """Summaries (see ``records.summary``) of processes matching ``where``, newest first, strictly after
        ``after`` in the (created_at DESC, process_id DESC) order; and the key of the last one (None if none).
        Keyset pagination on an index, so a page costs the same on page 1 and page 10 000.
        ``where.status`` may be ``RETRYING``."""

    async def count_by_case_and_status(self) -> list[tuple[str, str, int]]:
        """(case, status, count) for every case and status that has processes."""

    async def recent_stage_durations(self, processes: int) -> list[tuple[str, str, float]]:
        """(case, stage, duration_ms) of every stage run in the history of the ``processes`` newest processes:
        bounded work whatever the table size."""

    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:
        """How many processes match ``where``; None if counting would take longer than ``timeout_s``."""

    async def finished_per_minute(self, since: float) -> list[tuple[str, str, int, int]]:
        """(case, status, minute, count) of the processes that finished at or after ``since``: by case, final
        status and the minute they ended in (``int(ended_at // 60)``). A range scan of an end-time index."""

    async def recent_durations(self, since: float, limit: int) -> list[tuple[str, float]]:
        """(case, seconds from creation to end) of the ``limit`` processes that completed most recently, at or
        after ``since``, newest first."""

    async def failures_by_stage(self, since: float) -> list[tuple[str, str, int]]:
        """(case, stage, count) of the processes that failed at or after ``since``, by the stage that failed
        (``doc.error.stage``)."""

    async def overdue_by_case(self, before: float, limit: int) -> list[tuple[str, int]]:
        """(case, count) of waiting processes whose due time is before ``before`` (no due pass fired them: they
        are stuck), counting at most ``limit`` in all. A range scan of the due-time index."""


@runtime_checkable
class PoisonLedger(Protocol):
    """How often a redelivered message ran on its own (see the worker's poison handling)."""

    async def count_isolated_run(self, key: str, now: float) -> int:
        """Count one more run of the redelivered message ``key`` on its own; return how many so far.

        Only redelivered messages are counted (a crash made them come back), so the hot path never
        writes here."""

    async def forget_isolated_runs(self, key: str) -> None:
        """The message ``key`` was settled: drop its count."""


@runtime_checkable
class WorkflowStore(Protocol):
    """Workflows business users create and change at run time (``framework.workflows``): immutable versions
    of a blueprint, and per name whether new processes may start on it."""

    async def add_workflow_version(self, version: WorkflowVersion) -> bool:
        """Save a new version (the name's newest from now on; a new name starts active). False, writing
        nothing, if ``(name, version)`` exists: another writer saved that version first."""

    async def set_workflow_active(self, name: str, active: bool, *, by: str, now: float) -> bool:
        """Let new processes start on the workflow, or stop them (running ones go on). False if no such name."""

    async def workflows(self) -> list[WorkflowRow]:
        """Every workflow, by name (a few rows per deployment: workers read them every few seconds)."""

    async def workflow_versions(self, name: str, *, after: int = 0) -> list[WorkflowVersion]:
        """The versions of ``name`` newer than ``after``, oldest first."""


@runtime_checkable
class DeployStore(Protocol):
    """The worker registry and what a deploy asks of live processes (``framework.heartbeat``,
    ``framework.deploy``)."""

    async def record_worker(self, worker: WorkerRow) -> None:
        """Insert or refresh the worker's row (its heartbeat), and delete the rows of workers gone: not seen for
        ``GONE_AFTER_BEATS`` of their own heartbeats by ``worker.last_seen``."""

    async def remove_worker(self, worker_id: str) -> None:
        """A stopping worker's row goes."""

    async def running_workers(self, now: float) -> list[WorkerRow]:
        """The workers seen within ``GONE_AFTER_BEATS`` of their heartbeats by ``now``, by release and id."""

    async def live_reach(self) -> list[LiveGroup]:
        """Unfinished processes counted by (case, version, reach) in one query of an index of live processes,
        by case, version and reach; current even for rows a release before the deploy columns committed."""

    async def live_stages(self) -> list[LiveGroup]:
        """The same by (case, version, stage, waiting kind)."""


@runtime_checkable
class ProcessStore(
    Lifecycle, DocumentStore, FanOutStore, ScheduleStore, JobStore, ProcessQueries, PoisonLedger, WorkflowStore,
    DeployStore,
    Protocol,
):
    """Everything a full backend provides: what the engine, the gateway and the CLI are given."""


PROTOCOLS: tuple[type, ...] = (
    Lifecycle, DocumentStore, FanOutStore, ScheduleStore, JobStore, ProcessQueries, PoisonLedger, WorkflowStore,
    DeployStore,
)
