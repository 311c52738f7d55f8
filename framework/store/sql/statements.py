"""The SQL both backends run, written once (PostgreSQL spelling, see ``dialect``), and the filter builder.

``Statements(dialect, schema)`` renders every statement for one database and table prefix, once, when the
store is built. Row layouts (what ``$1``, ``$2``... are) are those of ``rows``: ``create_row`` for the process
inserts, ``commit_row`` for the document updates.
"""

from __future__ import annotations

from typing import Any

from framework.search import SEARCH_NAME
from framework.store.records import RETRYING, PageKey, ProcessFilter
from framework.store.sql.dialect import Dialect

# The derived flag (``framework.store.derived``) that ``status=retrying`` lists filter on; its partial index is
# ``processes_retrying_created``.
RETRYING_SQL = "retrying"

# The process columns a create writes, in the order of ``rows.create_row`` (``$9`` is the history entry).
# ``derived_version`` is the document version the deploy columns (case_version, stage, reach) were derived from:
# a row that a release before them committed keeps an older one, so deploy queries know to read its document.
CREATE_COLUMNS = (
    "process_id, case_name, client_key, status, version, doc, due_at, created_at, updated_at, retrying,"
    " waiting_summary, search, ended_at, case_version, stage, reach, derived_version"
)
CREATE_VALUES = "$1, $2, $3, $4, $5, $6::jsonb, $7, $8, $8, $10, $11, $12::jsonb, $13, $14, $15, $16, $5"
# A commit's new values (``rows.commit_row``: $1 process id, $2 expected version, $7 the history entry).
COMMIT_SET = (
    "doc = $3::jsonb, version = $2 + 1, status = $4, due_at = $5, updated_at = $6, expires_at = $8,"
    " retrying = $9, waiting_summary = $10, search = $11::jsonb, ended_at = $12, case_version = $13, stage = $14,"
    " reach = $15, derived_version = $2 + 1"
)
FAN_STATE_COLUMNS = "grp, total, win, tolerate, first, next_index, done, failed, decided"
ITEM_COLUMNS = "idx, status, spec, result, error, updated_at"
SCHEDULE_COLUMNS = "name, definition, timing, next_fire_at, paused, last_tick, last_fired_at, updated_at"
ISOLATED_RUN_TTL_S = 86400  # an isolated-run count untouched this long is dropped by ``delete_expired``


def conditions(d: Dialect, where: ProcessFilter, params: list[Any] | None = None) -> tuple[list[str], list[Any]]:
    """``where`` as SQL conditions and their parameters (numbered after ``params``). Only the conditions in
    use go into the SQL, so the planner always sees an indexable query."""
    found: list[str] = []
    values: list[Any] = [] if params is None else params

    def add(sql: str, value: Any) -> None:
        values.append(value)
        found.append(sql.replace("?", f"${len(values)}"))

    if where.case is not None:
        add("case_name = ?", where.case)
    if where.status == RETRYING:
        found.append(RETRYING_SQL)
    elif where.status is not None:
        add("status = ?", where.status)
    if where.failed_stage is not None:
        add(f"{d.json_field('doc', 'error', 'stage')} = ?", where.failed_stage)
    if where.created_after is not None:
        add("created_at >= ?", where.created_after)
    if where.created_before is not None:
        add("created_at < ?", where.created_before)
    for name, value in where.search:  # names are checked identifiers (``framework.search``): safe in the SQL
        if not SEARCH_NAME.match(name):
            raise ValueError(f"not a search attribute name: {name!r}")
        add(*d.json_equals("search", name, value))
    return found, values


def _where(found: list[str]) -> str:
    return f"WHERE {' AND '.join(found)}" if found else ""


class Statements:
    """Every shared statement, rendered for one dialect and table prefix (attributes named after their use)."""

    def __init__(self, d: Dialect, schema: str | None) -> None:
        self.dialect = d
        p = self.prefix = f"{schema}." if schema else ""
        sql = d.sql
        # documents
        self.load = sql(f"SELECT doc FROM {p}processes WHERE process_id = $1")
        self.by_key = sql(f"SELECT doc FROM {p}processes WHERE case_name = $1 AND client_key = $2")
        self.insert = sql(
            f"INSERT INTO {p}processes ({CREATE_COLUMNS}) VALUES ({CREATE_VALUES}) ON CONFLICT DO NOTHING")
        self.update = sql(f"UPDATE {p}processes SET {COMMIT_SET} WHERE process_id = $1 AND version = $2")
        self.insert_history = sql(f"INSERT INTO {p}history (process_id, version, entry) VALUES ($1, $2, $3::jsonb)")
        self.history = sql(f"SELECT entry FROM {p}history WHERE process_id = $1 ORDER BY version")
        self.due = sql(f"SELECT doc FROM {p}processes WHERE due_at <= $1 ORDER BY due_at LIMIT $2")
        self.claim_due = sql(
            f"UPDATE {p}processes SET due_at = $4 WHERE process_id = $1 AND version = $2 AND due_at <= $3")
        # queries
        self.count_by_status = sql(
            f"SELECT status, count(*) FROM {p}processes WHERE $1::text IS NULL OR case_name = $1 GROUP BY status")
        self.count_by_case_and_status = (
            f"SELECT case_name, status, count(*) FROM {p}processes GROUP BY case_name, status")
        stage, ms = d.json_field("h.entry", "stage"), d.json_field("h.entry", "duration_ms", kind="float")
        self.recent_stage_durations = sql(f"""
            WITH recent AS (SELECT process_id, case_name FROM {p}processes
                            ORDER BY created_at DESC, process_id DESC LIMIT $1)
            SELECT r.case_name, {stage}, {ms} FROM recent r JOIN {p}history h ON h.process_id = r.process_id
            WHERE {ms} IS NOT NULL AND {stage} IS NOT NULL""")
        # statistics: range scans of the end-time index (processes_ended) and of the due-time one
        minute, failed_stage = d.floor_int("ended_at / 60"), d.json_field("doc", "error", "stage")
        self.finished_per_minute = sql(f"""
            SELECT case_name, status, {minute}, count(*) FROM {p}processes WHERE ended_at >= $1
            GROUP BY case_name, status, {minute}""")
        self.recent_durations = sql(f"""
            SELECT case_name, ended_at - created_at FROM {p}processes
            WHERE ended_at >= $1 AND status = 'completed' ORDER BY ended_at DESC LIMIT $2""")
        self.failures_by_stage = sql(f"""
            SELECT case_name, {failed_stage}, count(*) FROM {p}processes WHERE ended_at >= $1 AND status = 'failed'
            GROUP BY case_name, {failed_stage}""")
        self.overdue_by_case = sql(f"""
            SELECT case_name, count(*) FROM (SELECT case_name FROM {p}processes
                WHERE due_at < $1 AND status = 'waiting' ORDER BY due_at LIMIT $2) AS overdue GROUP BY case_name""")
        self.summary_columns = (
            "process_id, case_name, status, client_key, created_at, updated_at,"
            f" {d.json_field('doc', 'case_version', kind='int')}, {d.json_field('doc', 'stage')},"
            f" {d.json_field('doc', 'ended_at', kind='float')}, waiting_summary,"
            f" {d.json_field('doc', 'error', kind='json')}"
        )
        # jobs
        self.create_job = sql(f"INSERT INTO {p}jobs (job_id, status, owner, job, created_at, updated_at)"
                              " VALUES ($1, $2, $3, $4::jsonb, $5, $6)")
        self.save_job = sql(f"UPDATE {p}jobs SET status = $2, job = $3::jsonb, updated_at = $4"
                            " WHERE job_id = $1 AND owner = $5")
        self.load_job = sql(f"SELECT job FROM {p}jobs WHERE job_id = $1")
        self.list_jobs = sql(f"SELECT job FROM {p}jobs ORDER BY created_at DESC, job_id DESC LIMIT $1")
        claimed = d.json_set("job", {"status": "'running'", "owner": "$2::text", "updated_at": "$3::float8",
                                     "error": "NULL", "ended_at": "NULL"})
        self.claim_job = sql(f"UPDATE {p}jobs SET status = 'running', owner = $2, updated_at = $3, job = {claimed}"
                             f" WHERE job_id = $1 AND status {d.in_list(4)} RETURNING job")
        interrupted = d.json_set("job", {"status": "'interrupted'", "ended_at": "$2::float8",
                                         "error": "'its gateway stopped while it ran'"})
        self.interrupt_stale_jobs = sql(f"UPDATE {p}jobs SET status = 'interrupted', job = {interrupted}"
                                        " WHERE status = 'running' AND updated_at < $1")
        # poison ledger
        self.count_isolated_run = sql(f"""
            INSERT INTO {p}isolated_runs (key, runs, updated_at) VALUES ($1, 1, $2)
            ON CONFLICT (key) DO UPDATE SET runs = isolated_runs.runs + 1, updated_at = EXCLUDED.updated_at
            RETURNING runs""")
        self.forget_isolated_runs = sql(f"DELETE FROM {p}isolated_runs WHERE key = $1")
        self.forget_stale_runs = sql(f"DELETE FROM {p}isolated_runs WHERE updated_at < $1 - {ISOLATED_RUN_TTL_S}")
        # fan-outs
        self.fan_state = sql(f"SELECT {FAN_STATE_COLUMNS} FROM {p}fanouts WHERE process_id = $1 AND grp = $2")
        self.fan_items = sql(f"""
            SELECT {ITEM_COLUMNS} FROM {p}fan_items
            WHERE process_id = $1 AND grp = $2 AND idx > $3 AND ($4::text IS NULL OR status = $4)
              AND ($5::float8 IS NULL OR updated_at < $5)
            ORDER BY idx LIMIT $6""")
        # The counter row and the item, locked: completions of one fan-out are serialised on the counter row, and
        # a duplicate that waited for the lock sees the item as its first copy left it.
        f_columns = ", ".join(f"f.{c}" for c in FAN_STATE_COLUMNS.split(", "))
        self.fan_lock = sql(f"""
            SELECT {f_columns}, i.status, i.released
            FROM {p}fanouts f JOIN {p}fan_items i ON i.process_id = f.process_id AND i.grp = f.grp
            WHERE f.process_id = $1 AND f.grp = $2 AND i.idx = $3{d.for_update}""")
        self.dispatched_item = sql(f"SELECT {ITEM_COLUMNS} FROM {p}fan_items"
                                   " WHERE process_id = $1 AND grp = $2 AND idx = $3 AND status = 'dispatched'")
        live = "process_id = $1 AND grp = $2 AND status IN ('pending', 'dispatched')"
        self.live_items = sql(f"SELECT {ITEM_COLUMNS} FROM {p}fan_items WHERE {live} ORDER BY idx{d.for_update}")
        self.cancel_items = sql(f"UPDATE {p}fan_items SET status = 'cancelled', updated_at = $3 WHERE {live}")
        # A cancel marks the counter row first (the lock order of ``fan_lock``: the counter row, then items), and
        # only while items are live: a fan-out that had ended keeps its decision. Same $1, $2 as ``live``.
        self.cancel_fan = sql(f"UPDATE {p}fanouts SET decided = 'cancelled' WHERE process_id = $1 AND grp = $2"
                              f" AND EXISTS (SELECT 1 FROM {p}fan_items WHERE {live})")
        # schedules
        self.sync_schedule = sql(f"""
            INSERT INTO {p}schedules (name, definition, timing, next_fire_at, paused, updated_at)
            VALUES ($1, $2, $3, $4, false, $5)
            ON CONFLICT (name) DO UPDATE SET
                definition = EXCLUDED.definition, timing = EXCLUDED.timing, updated_at = EXCLUDED.updated_at,
                next_fire_at = CASE WHEN schedules.timing = EXCLUDED.timing THEN schedules.next_fire_at
                                    ELSE EXCLUDED.next_fire_at END
            WHERE schedules.definition <> EXCLUDED.definition""")
        self.due_schedules = sql(f"SELECT {SCHEDULE_COLUMNS} FROM {p}schedules WHERE name {d.in_list(1)}"
                                 " AND NOT paused AND next_fire_at <= $2 ORDER BY next_fire_at")
        self.advance_schedule = sql(
            f"UPDATE {p}schedules SET next_fire_at = $3, last_tick = $4, last_fired_at = $5, updated_at = $5"
            " WHERE name = $1 AND next_fire_at = $2")
        self.schedules = f"SELECT {SCHEDULE_COLUMNS} FROM {p}schedules ORDER BY name"
        self.pause_schedule = sql(
            f"UPDATE {p}schedules SET paused = $2, next_fire_at = coalesce($3, next_fire_at), updated_at = $4"
            " WHERE name = $1")

    def find_ids(self, where: ProcessFilter, after: str | None, limit: int) -> tuple[str, list[Any]]:
        """In id order, keyset on process_id (operator actions walk every match)."""
        return self._page("process_id", where, ("process_id",), None if after is None else (after,), limit)

    def list_page(self, where: ProcessFilter, after: PageKey | None, limit: int) -> tuple[str, list[Any]]:
        """Newest first, keyset on (created_at, process_id): the index ``processes_created`` (or its
        status / retrying sibling) serves every page at the same cost."""
        return self._page(self.summary_columns, where, ("created_at", "process_id"), after, limit, descending=True)

    def _page(
        self, columns: str, where: ProcessFilter, keys: tuple[str, ...], after: tuple[Any, ...] | None, limit: int,
        *, descending: bool = False,
    ) -> tuple[str, list[Any]]:
        found, params = conditions(self.dialect, where)
        if after is not None:
            marks = ", ".join(f"${len(params) + 1 + i}" for i in range(len(after)))
            params.extend(after)
            found.append(f"({', '.join(keys)}) {'<' if descending else '>'} ({marks})")
        params.append(limit)
        order = ", ".join(f"{key} DESC" if descending else key for key in keys)
        return self.dialect.sql(
            f"SELECT {columns} FROM {self.prefix}processes {_where(found)} ORDER BY {order} LIMIT ${len(params)}"
        ), params

    def count_matching(self, where: ProcessFilter) -> tuple[str, list[Any]]:
        found, params = conditions(self.dialect, where)
        return self.dialect.sql(f"SELECT count(*) FROM {self.prefix}processes {_where(found)}"), params
