"""PostgreSQL store (asyncpg): the production store.

One row per process in ``processes`` (the document as JSONB plus the columns queries need) and one row
per transition in ``history``. A commit is a single statement: a version-checked UPDATE whose CTE also
inserts the history row, so a transition costs one round trip and one commit.

Under load, the concurrent loads, commits and creates of a worker (or gateway) are batched (``Batcher``):
one statement loads, commits or creates many documents, each commit still compare-and-set on its own
version, and the batch is one transaction, so one WAL flush serves many transitions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from framework.document import ProcessDocument
from framework.errors import ConfigurationError, StoreError, UnstorableDataError
from framework.store.base import RETRYING, Job, PageKey, ProcessFilter, ProcessStore, ScheduleRow, summary
from framework.store.batcher import Batcher
from framework.store.pg_fanout import PostgresFanOuts

# One commit's statement parameters: process_id, expected version, document, status, due_at, updated_at,
# history entry, expires_at (the order of ``_sql_commit``'s $1..$8).
_Commit = tuple[str, int, str, str, float | None, float, str, float | None]
# process_id, case, client_key, status, version, doc, due_at, created_at, history entry
_Create = tuple[str, str, str | None, str, int, str, float | None, float, str]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Errors that mean "the database is not reachable right now"; anything else is a bug to surface.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
)


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook that skips asyncpg's default session reset (``RESET ALL; UNLISTEN *; ...``).

    That reset is one more round trip per query, and we keep no session state to reset: no SET, no
    LISTEN, advisory locks only transaction-scoped. asyncpg still rolls back an open transaction."""


class _Pooled:
    """``async with store._connection() as conn``: a connection of the pool, and PostgreSQL being unreachable
    (on acquiring, using or releasing it) as a ``StoreError``. A class rather than a generator-based context
    manager: it runs twice per transition."""

    __slots__ = ("_acquire",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._acquire = pool.acquire()

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            return await self._acquire.__aenter__()
        except TRANSIENT_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._acquire.__aexit__(exc_type, exc, tb)
        except TRANSIENT_ERRORS as release_error:
            raise _unavailable(release_error) from release_error
        if isinstance(exc, TRANSIENT_ERRORS):
            raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> StoreError:
    return StoreError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")


class PostgresStore(PostgresFanOuts, ProcessStore):
    def __init__(self, dsn: str, *, schema: str = "stageflow", min_size: int = 2, max_size: int = 10) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(f"invalid PostgreSQL schema name {schema!r}", hint="use [a-z0-9_]")
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._loads: Batcher[str, str | None] = Batcher(self._load_batch)
        self._commits: Batcher[_Commit, bool] = Batcher(self._commit_batch, key=lambda c: c[0])
        self._creates: Batcher[_Create, bool] = Batcher(self._create_batch, key=lambda c: c[0])
        s = schema
        self._sql_load = f"SELECT doc FROM {s}.processes WHERE process_id = $1"
        self._sql_load_many = f"SELECT process_id, doc FROM {s}.processes WHERE process_id = ANY($1::text[])"
        self._sql_insert = f"""
            WITH ins AS (
                INSERT INTO {s}.processes
                    (process_id, case_name, client_key, status, version, doc, due_at, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $8)
                ON CONFLICT DO NOTHING
                RETURNING process_id, version)
            INSERT INTO {s}.history (process_id, version, entry)
            SELECT process_id, version, $9::jsonb FROM ins"""
        # The same for many processes; returns the id of each one inserted (not one whose id or key exists).
        self._sql_insert_many = f"""
            WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                                     $7::float8[], $8::float8[], $9::text[])
                    AS i(process_id, case_name, client_key, status, version, doc, due_at, created_at, entry)),
            ins AS (
                INSERT INTO {s}.processes
                    (process_id, case_name, client_key, status, version, doc, due_at, created_at, updated_at)
                SELECT process_id, case_name, client_key, status, version, doc::jsonb, due_at, created_at, created_at
                FROM input
                ON CONFLICT DO NOTHING
                RETURNING process_id, version),
            hist AS (INSERT INTO {s}.history (process_id, version, entry)
                     SELECT ins.process_id, ins.version, input.entry::jsonb FROM ins JOIN input USING (process_id))
            SELECT process_id FROM ins"""
        self._sql_by_key = f"SELECT doc FROM {s}.processes WHERE case_name = $1 AND client_key = $2"
        self._sql_commit = f"""
            WITH upd AS (
                UPDATE {s}.processes
                SET doc = $3::jsonb, version = $2 + 1, status = $4, due_at = $5, updated_at = $6,
                    expires_at = $8
                WHERE process_id = $1 AND version = $2
                RETURNING process_id)
            INSERT INTO {s}.history (process_id, version, entry)
            SELECT process_id, $2 + 1, $7::jsonb FROM upd"""
        # The same for many documents: each row is checked against its own expected version.
        self._sql_commit_many = f"""
            WITH input AS (
                SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::float8[],
                                     $7::text[], $8::float8[])
                    AS i(process_id, expected, doc, status, due_at, updated_at, entry, expires_at)),
            upd AS (
                UPDATE {s}.processes p
                SET doc = i.doc::jsonb, version = i.expected + 1, status = i.status, due_at = i.due_at,
                    updated_at = i.updated_at, expires_at = i.expires_at
                FROM input i
                WHERE p.process_id = i.process_id AND p.version = i.expected
                RETURNING p.process_id, p.version, i.entry),
            hist AS (INSERT INTO {s}.history (process_id, version, entry)
                     SELECT process_id, version, entry::jsonb FROM upd)
            SELECT process_id FROM upd"""
        self._sql_history = f"SELECT entry FROM {s}.history WHERE process_id = $1 ORDER BY version"
        # The document and its history as one JSON array, in one round trip: two primary-key index scans.
        self._sql_load_with_history = f"""
            SELECT p.doc, coalesce((SELECT json_agg(h.entry ORDER BY h.version) FROM {s}.history h
                                    WHERE h.process_id = p.process_id), '[]') AS history
            FROM {s}.processes p WHERE p.process_id = $1"""
        self._sql_due = f"SELECT doc FROM {s}.processes WHERE due_at <= $1 ORDER BY due_at LIMIT $2"
        self._sql_claim = (
            f"UPDATE {s}.processes SET due_at = $4 WHERE process_id = $1 AND version = $2 AND due_at <= $3"
        )
        self._sql_find = f"""
            SELECT process_id FROM {s}.processes
            WHERE ($1::text IS NULL OR case_name = $1) AND ($2::text IS NULL OR status = $2)
              AND ($3::text IS NULL OR doc->'error'->>'stage' = $3)
              AND ($4::float8 IS NULL OR created_at >= $4) AND ($5::float8 IS NULL OR created_at < $5)
              AND ($6::text IS NULL OR process_id > $6)
            ORDER BY process_id LIMIT $7"""
        self._sql_expire = f"""
            WITH gone AS (
                DELETE FROM {s}.processes WHERE process_id IN (
                    SELECT process_id FROM {s}.processes WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING process_id),
            history AS (DELETE FROM {s}.history WHERE process_id IN (SELECT process_id FROM gone)),
            fanouts AS (DELETE FROM {s}.fanouts WHERE process_id IN (SELECT process_id FROM gone)),
            items AS (DELETE FROM {s}.fan_items WHERE process_id IN (SELECT process_id FROM gone)),
            suspects AS (DELETE FROM {s}.isolated_runs WHERE updated_at < $1 - 86400)
            SELECT count(*) FROM gone"""
        self._sql_count_run = f"""
            INSERT INTO {s}.isolated_runs (key, runs, updated_at) VALUES ($1, 1, $2)
            ON CONFLICT (key) DO UPDATE SET runs = isolated_runs.runs + 1, updated_at = $2
            RETURNING runs"""
        self._sql_forget_runs = f"DELETE FROM {s}.isolated_runs WHERE key = $1"
        # The fan-out transition: the document, its history row, the counter row and every item in one statement.
        self._sql_commit_fan_out = f"""
            WITH upd AS (
                UPDATE {s}.processes
                SET doc = $3::jsonb, version = $2 + 1, status = $4, due_at = $5, updated_at = $6
                WHERE process_id = $1 AND version = $2
                RETURNING process_id),
            hist AS (INSERT INTO {s}.history (process_id, version, entry) SELECT process_id, $2 + 1, $7::jsonb FROM upd),
            fan AS (
                INSERT INTO {s}.fanouts (process_id, grp, total, win, tolerate, first, next_index, done, failed, decided)
                SELECT process_id, $8, $9, $10, $11, $12, $13, 0, 0, $14 FROM upd),
            items AS (
                INSERT INTO {s}.fan_items (process_id, grp, idx, status, spec, updated_at)
                SELECT u.process_id, $8, t.ord - 1, CASE WHEN t.ord <= $13 THEN 'dispatched' ELSE 'pending' END,
                       t.spec::jsonb, $6
                FROM upd u, unnest($15::text[]) WITH ORDINALITY AS t(spec, ord))
            SELECT count(*) FROM upd"""
        self._sql_fan_state = f"""
            SELECT grp, total, win, tolerate, first, next_index, done, failed, decided FROM {s}.fanouts
            WHERE process_id = $1 AND grp = $2"""
        self._sql_fan_items = f"""
            SELECT idx, status, spec, result, error, updated_at FROM {s}.fan_items
            WHERE process_id = $1 AND grp = $2 AND idx > $3 AND ($4::text IS NULL OR status = $4)
              AND ($5::float8 IS NULL OR updated_at < $5)
            ORDER BY idx LIMIT $6"""
        self._sql_sync_schedule = f"""
            INSERT INTO {s}.schedules (name, definition, timing, next_fire_at, paused, updated_at)
            VALUES ($1, $2, $3, $4, false, $5)
            ON CONFLICT (name) DO UPDATE SET
                definition = EXCLUDED.definition, timing = EXCLUDED.timing, updated_at = EXCLUDED.updated_at,
                next_fire_at = CASE WHEN schedules.timing = EXCLUDED.timing THEN schedules.next_fire_at
                                    ELSE EXCLUDED.next_fire_at END
            WHERE schedules.definition <> EXCLUDED.definition"""
        self._sql_schedule_columns = (
            "name, definition, timing, next_fire_at, paused, last_tick, last_fired_at, updated_at"
        )
        self._sql_due_schedules = f"""
            SELECT {self._sql_schedule_columns} FROM {s}.schedules
            WHERE name = ANY($1::text[]) AND NOT paused AND next_fire_at <= $2 ORDER BY next_fire_at"""
        self._sql_advance_schedule = f"""
            UPDATE {s}.schedules SET next_fire_at = $3, last_tick = $4, last_fired_at = $5, updated_at = $5
            WHERE name = $1 AND next_fire_at = $2"""
        self._sql_pause_schedule = f"""
            UPDATE {s}.schedules SET paused = $2, next_fire_at = coalesce($3, next_fire_at), updated_at = $4
            WHERE name = $1"""

    @property
    def schema(self) -> str:
        return self._schema

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, command_timeout=30,
                reset=keep_session,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                # Many workers may start at once: serialise schema creation on an advisory lock.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"stageflow:{self._schema}")
                await conn.execute(_schema_sql(self._schema))
        except TRANSIENT_ERRORS as exc:
            raise StoreError(
                f"cannot reach PostgreSQL: {exc}", hint="check STAGEFLOW_STORE_URL and that PostgreSQL is running"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _connection(self) -> _Pooled:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open", hint="call `await store.open()` first")
        return _Pooled(self._pool)

    async def create(
        self, doc: ProcessDocument, entry: dict[str, Any], *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        # Concurrent starts (a burst of API calls, a fan-out's children) go in one statement, like commits.
        inserted = await self._creates.submit((
            doc.process_id, doc.case, doc.client_key, doc.status.value, doc.version, doc.to_json().decode(), due_at,
            doc.created_at, orjson.dumps(entry).decode(),
        ))
        if inserted:
            return doc, True
        async with self._connection() as conn:
            raw = await conn.fetchval(self._sql_by_key, doc.case, doc.client_key)
        if raw is None:
            raise StoreError(f"process {doc.process_id} could not be created (id collision)")
        return ProcessDocument.from_json(raw), False

    async def _create_batch(self, creates: list[_Create]) -> list[bool | BaseException]:
        # Locks: the client key's unique index entry (when there is one), then the process id's.
        return await self._apply_rows(creates, many=self._sql_insert_many, one=self._sql_insert,
                                      lock_order=lambda c: (c[1], c[2] or "", c[0]))

    async def load(self, process_id: str) -> ProcessDocument | None:
        raw = await self._loads.submit(process_id)
        return None if raw is None else ProcessDocument.from_json(raw)

    async def _load_batch(self, process_ids: list[str]) -> list[str | None]:
        async with self._connection() as conn:
            if len(process_ids) == 1:
                return [await conn.fetchval(self._sql_load, process_ids[0])]
            rows = await conn.fetch(self._sql_load_many, process_ids)
        found = {r["process_id"]: r["doc"] for r in rows}
        return [found.get(process_id) for process_id in process_ids]

    async def commit(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        # Encoded here, so a value that is not JSON fails its own caller (orjson.JSONEncodeError), not a batch.
        return await self._commits.submit((
            doc.process_id, expected_version, doc.to_json().decode(), doc.status.value, due_at, doc.updated_at,
            orjson.dumps(entry).decode(), expires_at,
        ))

    async def _commit_batch(self, commits: list[_Commit]) -> list[bool | BaseException]:
        return await self._apply_rows(commits, many=self._sql_commit_many, one=self._sql_commit,
                                      lock_order=lambda c: c[0])

    async def _apply_rows(
        self, rows: list[Any], *, many: str, one: str, lock_order: Callable[[Any], Any]
    ) -> list[bool | BaseException]:
        """Write ``rows`` (tuples starting with the process id) in one statement, ``many``, which returns the id
        of each row it applied; whether each row was applied, in order. If PostgreSQL refuses the statement
        (e.g. one document it cannot store), the rows go one by one (``one``), so only that row's caller fails
        (with ``UnstorableDataError``)."""
        async with self._connection() as conn:
            if len(rows) == 1:
                return await _apply_one_by_one(conn, rows, one)
            # In ``lock_order``, so two batches (two workers, two gateways) take the row and unique-index locks
            # they share in the same order and never deadlock.
            ordered = sorted(rows, key=lock_order)
            try:
                applied = await conn.fetch(many, *(list(column) for column in zip(*ordered)))
            except TRANSIENT_ERRORS:
                raise
            except asyncpg.PostgresError:
                return await _apply_one_by_one(conn, rows, one)
        done = {r["process_id"] for r in applied}
        return [row[0] in done for row in rows]

    async def history(self, process_id: str) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql_history, process_id)
        return [orjson.loads(r["entry"]) for r in rows]

    async def load_with_history(self, process_id: str) -> tuple[ProcessDocument, list[dict[str, Any]]] | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql_load_with_history, process_id)
        if row is None:
            return None
        return ProcessDocument.from_json(row["doc"]), orjson.loads(row["history"])

    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT status, count(*) AS n FROM {self._schema}.processes"
                " WHERE $1::text IS NULL OR case_name = $1 GROUP BY status",
                case,
            )
        return {r["status"]: r["n"] for r in rows}

    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql_due, now, limit)
        return [ProcessDocument.from_json(r["doc"]) for r in rows]

    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(self._sql_claim, process_id, version, now, next_at)
        return status.endswith(" 1")

    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql_find, where.case, where.status, where.failed_stage, where.created_after,
                where.created_before, after, limit,
            )
        return [r["process_id"] for r in rows]

    async def list_page(
        self, where: ProcessFilter, *, after: PageKey | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], PageKey | None]:
        # Only the conditions in use go into the SQL, so the planner always sees an indexable query.
        conditions, params = _conditions(where)
        if after is not None:
            params.extend(after)
            conditions.append(f"(created_at, process_id) < (${len(params) - 1}, ${len(params)})")
        params.append(limit)
        sql = f"""
            SELECT process_id, case_name, status, client_key, created_at, updated_at,
                   (doc->>'case_version')::int AS case_version, doc->>'stage' AS stage,
                   (doc->>'ended_at')::float8 AS ended_at, doc->'waiting' AS waiting, doc->'error' AS error
            FROM {self._schema}.processes {"WHERE " + " AND ".join(conditions) if conditions else ""}
            ORDER BY created_at DESC, process_id DESC LIMIT ${len(params)}"""
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *params)
        items = [
            summary(
                process_id=r["process_id"], case=r["case_name"], case_version=r["case_version"], status=r["status"],
                stage=r["stage"], client_key=r["client_key"], created_at=r["created_at"],
                updated_at=r["updated_at"], ended_at=r["ended_at"], waiting=_json(r["waiting"]),
                error=_json(r["error"]),
            )
            for r in rows
        ]
        last = (rows[-1]["created_at"], rows[-1]["process_id"]) if rows else None
        return items, last

    async def count_by_case_and_status(self) -> list[tuple[str, str, int]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT case_name, status, count(*) AS n FROM {self._schema}.processes GROUP BY case_name, status"
            )
        return [(r["case_name"], r["status"], r["n"]) for r in rows]

    async def recent_stage_durations(self, processes: int) -> list[tuple[str, str, float]]:
        s = self._schema
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"""WITH recent AS (SELECT process_id, case_name FROM {s}.processes
                                    ORDER BY created_at DESC, process_id DESC LIMIT $1)
                    SELECT r.case_name, h.entry->>'stage' AS stage, (h.entry->>'duration_ms')::float8 AS ms
                    FROM recent r JOIN {s}.history h ON h.process_id = r.process_id
                    WHERE h.entry ? 'duration_ms' AND h.entry->>'stage' IS NOT NULL""",
                processes,
            )
        return [(r["case_name"], r["stage"], r["ms"]) for r in rows]

    async def count_matching(self, where: ProcessFilter, *, timeout_s: float) -> int | None:
        conditions, params = _conditions(where)
        sql = f"SELECT count(*) FROM {self._schema}.processes {'WHERE ' + ' AND '.join(conditions) if conditions else ''}"
        async with self._connection() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            try:
                return await conn.fetchval(sql, *params)
            except asyncpg.QueryCanceledError:
                return None

    async def create_job(self, job: Job) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO {self._schema}.jobs (job_id, status, owner, job, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
                job.job_id, job.status, job.owner, job.to_json(), job.created_at, job.updated_at,
            )

    async def save_job(self, job: Job) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                f"UPDATE {self._schema}.jobs SET status = $2, job = $3::jsonb, updated_at = $4"
                " WHERE job_id = $1 AND owner = $5",
                job.job_id, job.status, job.to_json(), job.updated_at, job.owner,
            )
        return status.endswith(" 1")

    async def load_job(self, job_id: str) -> Job | None:
        async with self._connection() as conn:
            raw = await conn.fetchval(f"SELECT job FROM {self._schema}.jobs WHERE job_id = $1", job_id)
        return None if raw is None else Job.from_json(raw)

    async def list_jobs(self, *, limit: int) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT job FROM {self._schema}.jobs ORDER BY created_at DESC, job_id DESC LIMIT $1", limit
            )
        return [Job.from_json(r["job"]) for r in rows]

    async def claim_job(self, job_id: str, *, owner: str, now: float, from_statuses: tuple[str, ...]) -> Job | None:
        async with self._connection() as conn:
            raw = await conn.fetchval(
                f"""UPDATE {self._schema}.jobs SET status = 'running', owner = $2, updated_at = $3,
                        job = job || jsonb_build_object('status', 'running', 'owner', $2::text, 'updated_at', $3::float8,
                                                        'error', NULL, 'ended_at', NULL)
                    WHERE job_id = $1 AND status = ANY($4::text[]) RETURNING job""",
                job_id, owner, now, list(from_statuses),
            )
        return None if raw is None else Job.from_json(raw)

    async def interrupt_stale_jobs(self, *, stale_before: float, now: float) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(
                f"""WITH stale AS (
                        UPDATE {self._schema}.jobs SET status = 'interrupted',
                            job = job || jsonb_build_object('status', 'interrupted', 'ended_at', $2::float8,
                                                            'error', 'its gateway stopped while it ran')
                        WHERE status = 'running' AND updated_at < $1 RETURNING 1)
                    SELECT count(*) FROM stale""",
                stale_before, now,
            )

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1", timeout=5)

    async def delete_expired(self, now: float, limit: int) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(self._sql_expire, now, limit)

    async def count_isolated_run(self, key: str, now: float) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(self._sql_count_run, key, now)

    async def forget_isolated_runs(self, key: str) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql_forget_runs, key)

    async def sync_schedule(self, name: str, definition: str, timing: str, next_fire_at: float, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql_sync_schedule, name, definition, timing, next_fire_at, now)

    async def due_schedules(self, names: list[str], now: float) -> list[ScheduleRow]:
        if not names:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql_due_schedules, names, now)
        return [ScheduleRow(*r) for r in rows]

    async def advance_schedule(
        self, name: str, *, expected_next_fire_at: float, next_fire_at: float, last_tick: float, fired_at: float
    ) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                self._sql_advance_schedule, name, expected_next_fire_at, next_fire_at, last_tick, fired_at
            )
        return status.endswith(" 1")

    async def schedules(self) -> list[ScheduleRow]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {self._sql_schedule_columns} FROM {self._schema}.schedules ORDER BY name")
        return [ScheduleRow(*r) for r in rows]

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_fire_at: float | None = None
    ) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(self._sql_pause_schedule, name, paused, next_fire_at, now)
        return status.endswith(" 1")


_RETRYING_SQL = (
    "status = 'waiting' AND (doc->'waiting'->>'kind' = 'resend'"
    " OR (doc->'waiting'->>'kind' = 'timer' AND doc->'waiting'->>'reason' = 'retry'))"
)


def _conditions(where: ProcessFilter) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []

    def add(sql: str, value: Any) -> None:
        params.append(value)
        conditions.append(sql.replace("?", f"${len(params)}"))

    if where.case is not None:
        add("case_name = ?", where.case)
    if where.status == RETRYING:
        conditions.append(_RETRYING_SQL)
    elif where.status is not None:
        add("status = ?", where.status)
    if where.failed_stage is not None:
        add("doc->'error'->>'stage' = ?", where.failed_stage)
    if where.created_after is not None:
        add("created_at >= ?", where.created_after)
    if where.created_before is not None:
        add("created_at < ?", where.created_before)
    return conditions, params


def _json(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _schema_sql(s: str) -> str:
    return f"""
    CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TABLE IF NOT EXISTS {s}.processes (
        process_id  text PRIMARY KEY,
        case_name   text NOT NULL,
        client_key  text,
        status      text NOT NULL,
        version     integer NOT NULL,
        doc         jsonb NOT NULL,
        due_at      double precision,
        expires_at  double precision,
        created_at  double precision NOT NULL,
        updated_at  double precision NOT NULL,
        UNIQUE (case_name, client_key)
    ) WITH (fillfactor = 70);  -- room in each page for HOT updates (a transition that keeps status and due_at)
    CREATE INDEX IF NOT EXISTS processes_due_at ON {s}.processes (due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS processes_expires_at ON {s}.processes (expires_at) WHERE expires_at IS NOT NULL;
    -- lists and stats: newest first, keyset on (created_at, process_id); by status for status filters
    CREATE INDEX IF NOT EXISTS processes_created ON {s}.processes (created_at DESC, process_id DESC);
    CREATE INDEX IF NOT EXISTS processes_status_created
        ON {s}.processes (status, created_at DESC, process_id DESC);
    -- status=retrying lists: the few waiting processes in a retry backoff or re-send (same predicate as
    -- _conditions), so the list need not read every waiting document when there are none or few
    CREATE INDEX IF NOT EXISTS processes_retrying ON {s}.processes (created_at DESC, process_id DESC)
        WHERE {_RETRYING_SQL};
    CREATE TABLE IF NOT EXISTS {s}.isolated_runs (
        key         text PRIMARY KEY,
        runs        integer NOT NULL,
        updated_at  double precision NOT NULL
    );
    CREATE TABLE IF NOT EXISTS {s}.fanouts (
        process_id  text NOT NULL,
        grp         integer NOT NULL,
        total       integer NOT NULL,
        win         integer NOT NULL,
        tolerate    integer NOT NULL,
        first       boolean NOT NULL,
        next_index  integer NOT NULL,
        done        integer NOT NULL,
        failed      integer NOT NULL,
        decided     text,
        PRIMARY KEY (process_id, grp)
    );
    CREATE TABLE IF NOT EXISTS {s}.fan_items (
        process_id  text NOT NULL,
        grp         integer NOT NULL,
        idx         integer NOT NULL,
        status      text NOT NULL,
        spec        jsonb NOT NULL,
        result      jsonb,
        error       text,
        released    integer,
        updated_at  double precision NOT NULL,
        PRIMARY KEY (process_id, grp, idx)
    );
    CREATE TABLE IF NOT EXISTS {s}.schedules (
        name          text PRIMARY KEY,
        definition    text NOT NULL,
        timing        text NOT NULL,
        next_fire_at  double precision NOT NULL,
        paused        boolean NOT NULL,
        last_tick     double precision,
        last_fired_at double precision,
        updated_at    double precision NOT NULL
    );
    -- background jobs (bulk reprocess): the job as JSON plus what claims and staleness checks need
    CREATE TABLE IF NOT EXISTS {s}.jobs (
        job_id      text PRIMARY KEY,
        status      text NOT NULL,
        owner       text NOT NULL,
        job         jsonb NOT NULL,
        created_at  double precision NOT NULL,
        updated_at  double precision NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_created ON {s}.jobs (created_at DESC, job_id DESC);
    CREATE TABLE IF NOT EXISTS {s}.history (
        process_id  text NOT NULL,
        version     integer NOT NULL,
        entry       jsonb NOT NULL,
        PRIMARY KEY (process_id, version)
    );
    """


async def _apply_one_by_one(conn: asyncpg.Connection, rows: list[Any], one: str) -> list[bool | BaseException]:
    """Each row in its own statement: a row PostgreSQL refuses fails alone, as ``UnstorableDataError``."""
    results: list[bool | BaseException] = []
    for row in rows:
        try:
            results.append((await conn.execute(one, *row)).endswith(" 1"))
        except TRANSIENT_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            results.append(UnstorableDataError(f"PostgreSQL refused the document: {exc}"))
    return results
