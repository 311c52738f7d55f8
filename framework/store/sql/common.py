"""The store methods that are the same on every SQL database, written once over an ``Executor``.

A backend subclasses ``SqlStore``, sets ``_sql`` (its ``Statements``) and ``_deploy`` (``DeployStatements``),
and provides ``_session()`` (a connection), ``_transaction()`` (one in a transaction) and the writes that
differ: the batched or single-statement document writes, and ``_write_completion`` of ``complete_item``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemCompletion, ItemRow, complete
from framework.store.protocols import ProcessStore
from framework.store.records import Job, PageKey, ProcessFilter, ScheduleRow
from framework.store.sql.deploy import DeployStatements, SqlDeploy
from framework.store.sql.executor import Executor
from framework.store.sql.rows import fan_state, item_row, page_key, schedule_row, summary_row
from framework.store.sql.statements import Statements
from framework.store.sql.workflows import SqlWorkflows, WorkflowStatements

# process_id, group, index, new item status, result JSON, error, released index, now, and the counter row's
# next_index, done, failed, decided: the parameters of a backend's ``_write_completion``.
Completion = tuple[str, int, int, str, str | None, str | None, int | None, float, int, int, int, str | None]


class SqlStore(SqlWorkflows, SqlDeploy, ProcessStore):
    _sql: Statements
    _workflow_sql: WorkflowStatements
    _deploy: DeployStatements

    @abstractmethod
    def _session(self) -> AbstractAsyncContextManager[Executor]:
        """A connection for reads (a backend's own)."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A connection inside one transaction."""

    @abstractmethod
    async def _write_completion(self, db: Executor, completion: Completion) -> tuple[bool, Sequence[Any] | None]:
        """Write an item's completion, the counters and the release (``Completion``) if the item is still
        dispatched: whether it was, and the released item's row (``ITEM_COLUMNS``) if one was released."""

    async def _rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        async with self._session() as db:
            return await db.rows(sql, *args)

    async def _changed(self, sql: str, *args: Any) -> int:
        async with self._session() as db:
            return await db.changed(sql, *args)

    # -- documents ----------------------------------------------------------------------------------------

    async def load(self, process_id: str) -> ProcessDocument | None:
        rows = await self._rows(self._sql.load, process_id)
        return ProcessDocument.from_json(rows[0][0]) if rows else None

    async def load_by_key(self, case: str, client_key: str) -> ProcessDocument | None:
        rows = await self._rows(self._sql.by_key, case, client_key)
        return ProcessDocument.from_json(rows[0][0]) if rows else None

    async def history(self, process_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in await self._rows(self._sql.history, process_id)]

    async def load_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]] | None:
        async with self._session() as db:
            rows = await db.rows(self._sql.load, process_id)
            if not rows:
                return None
            history = await db.rows(self._sql.history, process_id)
        return ProcessDocument.from_json(rows[0][0]), [orjson.loads(r[0]) for r in history]

    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        return [ProcessDocument.from_json(r[0]) for r in await self._rows(self._sql.due, now, limit)]

    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        return await self._changed(self._sql.claim_due, process_id, version, now, next_at) == 1

    # -- queries ------------------------------------------------------------------------------------------

    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        return {status: n for status, n in await self._rows(self._sql.count_by_status, case)}

    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        sql, params = self._sql.find_ids(where, after, limit)
        return [r[0] for r in await self._rows(sql, *params)]

    async def list_page(
        self, where: ProcessFilter, *, after: PageKey | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], PageKey | None]:
        sql, params = self._sql.list_page(where, after, limit)
        rows = await self._rows(sql, *params)
        return [summary_row(r) for r in rows], page_key(rows)

    async def count_by_case_and_status(self) -> list[tuple[str, str, int]]:
        return [(c, s, n) for c, s, n in await self._rows(self._sql.count_by_case_and_status)]

    async def recent_stage_durations(self, processes: int) -> list[tuple[str, str, float]]:
        return [(c, s, float(ms)) for c, s, ms in await self._rows(self._sql.recent_stage_durations, processes)]

    async def finished_per_minute(self, since: float) -> list[tuple[str, str, int, int]]:
        return [(c, s, int(m), n) for c, s, m, n in await self._rows(self._sql.finished_per_minute, since)]

    async def recent_durations(self, since: float, limit: int) -> list[tuple[str, float]]:
        return [(c, float(s)) for c, s in await self._rows(self._sql.recent_durations, since, limit)]

    async def failures_by_stage(self, since: float) -> list[tuple[str, str, int]]:
        return [(c, s or "", n) for c, s, n in await self._rows(self._sql.failures_by_stage, since)]

    async def overdue_by_case(self, before: float, limit: int) -> list[tuple[str, int]]:
        return [(c, n) for c, n in await self._rows(self._sql.overdue_by_case, before, limit)]

    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:
        """Counts without a time limit: a backend whose count can be slow overrides this."""
        sql, params = self._sql.count_matching(where)
        return int((await self._rows(sql, *params))[0][0])

    # -- jobs ---------------------------------------------------------------------------------------------

    async def create_job(self, job: Job) -> None:
        await self._changed(self._sql.create_job, job.job_id, job.status, job.owner, job.to_json(), job.created_at,
                            job.updated_at)

    async def save_job(self, job: Job) -> bool:
        return await self._changed(
            self._sql.save_job, job.job_id, job.status, job.to_json(), job.updated_at, job.owner) == 1

    async def load_job(self, job_id: str) -> Job | None:
        rows = await self._rows(self._sql.load_job, job_id)
        return Job.from_json(rows[0][0]) if rows else None

    async def list_jobs(self, *, limit: int) -> list[Job]:
        return [Job.from_json(r[0]) for r in await self._rows(self._sql.list_jobs, limit)]

    async def claim_job(self, job_id: str, *, owner: str, now: float, from_statuses: tuple[str, ...]) -> Job | None:
        statuses = self._sql.dialect.list_param(from_statuses)
        rows = await self._rows(self._sql.claim_job, job_id, owner, now, statuses)
        return Job.from_json(rows[0][0]) if rows else None

    async def interrupt_stale_jobs(self, *, stale_before: float, now: float) -> int:
        return await self._changed(self._sql.interrupt_stale_jobs, stale_before, now)

    # -- poison ledger ------------------------------------------------------------------------------------

    async def count_isolated_run(self, key: str, now: float) -> int:
        return int((await self._rows(self._sql.count_isolated_run, key, now))[0][0])

    async def forget_isolated_runs(self, key: str) -> None:
        await self._changed(self._sql.forget_isolated_runs, key)

    # -- fan-outs -----------------------------------------------------------------------------------------

    async def complete_item(
        self, process_id: str, group: int, index: int, *, ok: bool, result: Any, error: str | None, now: float
    ) -> ItemCompletion | None:
        sql = self._sql
        async with self._transaction() as db:
            found = await db.rows(sql.fan_lock, process_id, group, index)
            if not found:
                return None
            state, item_status, released = fan_state(found[0]), found[0][9], found[0][10]
            if item_status != "dispatched":  # a duplicate: hand back what its first completion released
                rows = [] if released is None else await db.rows(sql.dispatched_item, process_id, group, released)
                return ItemCompletion(False, state, item_row(rows[0]) if rows else None, False)
            new, release = complete(state, ok)
            applied, row = await self._write_completion(db, (
                process_id, group, index, "done" if ok else "failed", orjson.dumps(result).decode() if ok else None,
                error, release, now, new.next_index, new.done, new.failed, new.decided,
            ))
        if not applied:  # belt and braces: the item was not dispatched after all; nothing written
            return ItemCompletion(False, state, None, False)
        return ItemCompletion(True, new, None if row is None else item_row(row),
                              new.decided is not None and state.decided is None)

    async def cancel_items(self, process_id: str, group: int, *, now: float) -> list[ItemRow]:
        async with self._transaction() as db:  # the counter row and the items, in one transaction
            if not await db.changed(self._sql.cancel_fan, process_id, group):
                return []  # no fan-out, or none of its items is live: nothing to cancel
            rows = await db.rows(self._sql.live_items, process_id, group)
            await db.changed(self._sql.cancel_items, process_id, group, now)
        return [item for item in map(item_row, rows) if item.status == "dispatched"]

    async def fan_out_state(self, process_id: str, group: int) -> FanOutState | None:
        rows = await self._rows(self._sql.fan_state, process_id, group)
        return fan_state(rows[0]) if rows else None

    async def fan_out_items(
        self, process_id: str, group: int, *, status: str | None = None, after: int = -1, limit: int | None = None,
        updated_before: float | None = None,
    ) -> list[ItemRow]:
        limit = self._sql.dialect.no_limit if limit is None else limit
        rows = await self._rows(self._sql.fan_items, process_id, group, after, status, updated_before, limit)
        return [item_row(r) for r in rows]

    # -- schedules ----------------------------------------------------------------------------------------

    async def sync_schedule(self, name: str, definition: str, timing: str, next_fire_at: float, now: float) -> None:
        await self._changed(self._sql.sync_schedule, name, definition, timing, next_fire_at, now)

    async def due_schedules(self, names: list[str], now: float) -> list[ScheduleRow]:
        if not names:
            return []
        rows = await self._rows(self._sql.due_schedules, self._sql.dialect.list_param(names), now)
        return [schedule_row(r) for r in rows]

    async def advance_schedule(
        self, name: str, *, expected_next_fire_at: float, next_fire_at: float, last_tick: float, fired_at: float
    ) -> bool:
        return await self._changed(
            self._sql.advance_schedule, name, expected_next_fire_at, next_fire_at, last_tick, fired_at) == 1

    async def schedules(self) -> list[ScheduleRow]:
        return [schedule_row(r) for r in await self._rows(self._sql.schedules)]

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_fire_at: float | None = None
    ) -> bool:
        return await self._changed(self._sql.pause_schedule, name, paused, next_fire_at, now) == 1
