"""The tables, written once for both databases, and ``create_schema``: create what is missing, add the
columns newer versions need to an existing database, and fill them in.

Abstract column types (``{TEXT}``, ``{INT}``, ``{REAL}``, ``{BOOL}``, ``{JSON}``) become the dialect's;
``{p}`` is the table prefix (PostgreSQL's schema, with its dot; nothing in SQLite).
"""

from __future__ import annotations

from framework.document import ProcessDocument
from framework.store.derived import derived_columns
from framework.store.sql.dialect import Dialect
from framework.store.sql.executor import Executor
from framework.store.sql.workflows import WORKFLOW_TABLES

_TABLES = """
CREATE TABLE IF NOT EXISTS {p}processes (
    process_id      {TEXT} PRIMARY KEY,
    case_name       {TEXT} NOT NULL,
    client_key      {TEXT},
    status          {TEXT} NOT NULL,
    version         {INT} NOT NULL,
    doc             {JSON} NOT NULL,
    due_at          {REAL},
    expires_at      {REAL},
    created_at      {REAL} NOT NULL,
    updated_at      {REAL} NOT NULL,
    retrying        {BOOL} NOT NULL DEFAULT false,
    waiting_summary {TEXT},
    search          {JSON},
    ended_at        {REAL},
    UNIQUE (case_name, client_key)
){processes_options};
CREATE TABLE IF NOT EXISTS {p}history (
    process_id  {TEXT} NOT NULL,
    version     {INT} NOT NULL,
    entry       {JSON} NOT NULL,
    PRIMARY KEY (process_id, version)
);
CREATE TABLE IF NOT EXISTS {p}isolated_runs (
    key         {TEXT} PRIMARY KEY,
    runs        {INT} NOT NULL,
    updated_at  {REAL} NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}fanouts (
    process_id  {TEXT} NOT NULL,
    grp         {INT} NOT NULL,
    total       {INT} NOT NULL,
    win         {INT} NOT NULL,
    tolerate    {INT} NOT NULL,
    first       {BOOL} NOT NULL,
    next_index  {INT} NOT NULL,
    done        {INT} NOT NULL,
    failed      {INT} NOT NULL,
    decided     {TEXT},
    PRIMARY KEY (process_id, grp)
);
CREATE TABLE IF NOT EXISTS {p}fan_items (
    process_id  {TEXT} NOT NULL,
    grp         {INT} NOT NULL,
    idx         {INT} NOT NULL,
    status      {TEXT} NOT NULL,
    spec        {JSON} NOT NULL,
    result      {JSON},
    error       {TEXT},
    released    {INT},
    updated_at  {REAL} NOT NULL,
    PRIMARY KEY (process_id, grp, idx)
);
CREATE TABLE IF NOT EXISTS {p}schedules (
    name          {TEXT} PRIMARY KEY,
    definition    {TEXT} NOT NULL,
    timing        {TEXT} NOT NULL,
    next_fire_at  {REAL} NOT NULL,
    paused        {BOOL} NOT NULL,
    last_tick     {REAL},
    last_fired_at {REAL},
    updated_at    {REAL} NOT NULL
);
-- background jobs (bulk reprocess): the job as JSON plus what claims and staleness checks need
CREATE TABLE IF NOT EXISTS {p}jobs (
    job_id      {TEXT} PRIMARY KEY,
    status      {TEXT} NOT NULL,
    owner       {TEXT} NOT NULL,
    job         {JSON} NOT NULL,
    created_at  {REAL} NOT NULL,
    updated_at  {REAL} NOT NULL
);
"""

# After the columns are there (an older database gets them from ``_ADDED`` first).
_INDEXES = """
CREATE INDEX IF NOT EXISTS processes_due_at ON {p}processes (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_expires_at ON {p}processes (expires_at) WHERE expires_at IS NOT NULL;
-- lists and stats: newest first, keyset on (created_at, process_id); by status for status filters
CREATE INDEX IF NOT EXISTS processes_created ON {p}processes (created_at DESC, process_id DESC);
CREATE INDEX IF NOT EXISTS processes_status_created ON {p}processes (status, created_at DESC, process_id DESC);
-- status=retrying lists: the few processes in a retry backoff or re-send (the predicate of statements.RETRYING)
CREATE INDEX IF NOT EXISTS processes_retrying_created ON {p}processes (created_at DESC, process_id DESC)
    WHERE retrying;
DROP INDEX IF EXISTS {p}processes_retrying;  -- its predicate read the document's JSON
-- statistics: processes that finished in a time window (set once per process: running transitions stay HOT)
CREATE INDEX IF NOT EXISTS processes_ended ON {p}processes (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON {p}jobs (created_at DESC, job_id DESC);
"""

# Columns newer than the first schema: (table, column, definition).
_ADDED = (
    ("processes", "retrying", "{BOOL} NOT NULL DEFAULT false"),
    ("processes", "waiting_summary", "{TEXT}"),
    ("processes", "search", "{JSON}"),
    ("processes", "ended_at", "{REAL}"),
)
_DERIVED = {"retrying", "waiting_summary", "search"}  # what ``derived_columns`` fills from unfinished documents
# Search attribute filters are JSON containment, which a GIN index serves (PostgreSQL only; SQLite scans).
_PG_INDEXES = "CREATE INDEX IF NOT EXISTS processes_search ON {p}processes USING gin (search jsonb_path_ops)" \
    " WHERE search IS NOT NULL"


def _render(d: Dialect, text: str, prefix: str) -> str:
    return text.format(p=prefix, processes_options=d.processes_options, **d.types)


async def create_schema(db: Executor, d: Dialect, *, schema: str | None) -> None:
    """Create the tables and indexes that are missing; to an older database, add the newer columns and fill
    the derived ones of its unfinished processes (finished ones wait for nothing). Idempotent; the caller
    serialises concurrent openers (an advisory lock, SQLite's write lock)."""
    prefix = f"{schema}." if schema else ""
    if schema:
        await db.script(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await db.script(_render(d, _TABLES + WORKFLOW_TABLES, prefix))
    added = set()
    for table, column, definition in _ADDED:
        if column not in await db.column_names(schema, table):
            await db.script(f"ALTER TABLE {prefix}{table} ADD COLUMN {column} {_render(d, definition, prefix)}")
            added.add(column)
    if "ended_at" in added:  # a finished process's last transition is its end
        await db.script(f"UPDATE {prefix}processes SET ended_at = updated_at"
                        " WHERE status IN ('completed', 'failed', 'cancelled')")
    await db.script(_render(d, _INDEXES, prefix))
    if d.name == "postgresql":
        await db.script(_render(d, _PG_INDEXES, prefix))
    if added & _DERIVED:
        rows = await db.rows(d.sql(f"SELECT doc FROM {prefix}processes WHERE status IN ('running', 'waiting')"))
        await db.many(
            d.sql(f"UPDATE {prefix}processes SET retrying = $2, waiting_summary = $3, search = $4::jsonb"
                  " WHERE process_id = $1"),
            [(doc.process_id, *derived_columns(doc)[:3]) for doc in (ProcessDocument.from_json(r[0]) for r in rows)],
        )
