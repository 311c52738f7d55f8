"""The tables, as numbered forward-only migrations written once for both databases (``migrate`` applies them).

A migration is never edited once released: a change of the schema is a new one at the end of ``MIGRATIONS``,
which a store of the previous release must survive while that release's workers still run on it (add nullable
columns and indexes; never drop or rename what an earlier release reads or writes).

Abstract column types (``{TEXT}``, ``{INT}``, ``{REAL}``, ``{BOOL}``, ``{JSON}``) become the dialect's;
``{p}`` is the table prefix (PostgreSQL's schema, with its dot; nothing in SQLite). One statement per string:
SQLite's ``executescript`` would commit the migration's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from framework.store.sql.backfill import backfill
from framework.store.sql.dialect import Dialect
from framework.store.sql.executor import Executor
from framework.store.sql.workflows import WORKFLOW_TABLES

# A migration's step that needs Python (parsing documents): (connection, dialect, table prefix).
Step = Callable[[Executor, Dialect, str], Awaitable[None]]

LIVE = "status IN ('running', 'waiting')"  # a process that has not finished (the deploy index's predicate)


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()  # after ``statements``, in PostgreSQL only
    step: Step | None = None  # last
    # How a store made before the migrations table is recognised as having this one: these columns of
    # ``processes`` exist (None: no release without the table had it).
    columns: frozenset[str] | None = None


async def _derived_list_columns(db: Executor, d: Dialect, p: str) -> None:
    await backfill(db, d, p, ("retrying", "waiting_summary"), version=2)


async def _search(db: Executor, d: Dialect, p: str) -> None:
    await backfill(db, d, p, ("search",), version=4)


async def _reach(db: Executor, d: Dialect, p: str) -> None:
    await backfill(db, d, p, ("reach",), version=5)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, description="processes, history, fan-outs, schedules, jobs, isolated runs",
              columns=frozenset(), statements=(
        """CREATE TABLE IF NOT EXISTS {p}processes (
            process_id  {TEXT} PRIMARY KEY,
            case_name   {TEXT} NOT NULL,
            client_key  {TEXT},
            status      {TEXT} NOT NULL,
            version     {INT} NOT NULL,
            doc         {JSON} NOT NULL,
            due_at      {REAL},
            expires_at  {REAL},
            created_at  {REAL} NOT NULL,
            updated_at  {REAL} NOT NULL,
            UNIQUE (case_name, client_key)
        ){processes_options}""",
        """CREATE TABLE IF NOT EXISTS {p}history (
            process_id  {TEXT} NOT NULL,
            version     {INT} NOT NULL,
            entry       {JSON} NOT NULL,
            PRIMARY KEY (process_id, version)
        )""",
        """CREATE TABLE IF NOT EXISTS {p}isolated_runs (
            key         {TEXT} PRIMARY KEY,
            runs        {INT} NOT NULL,
            updated_at  {REAL} NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {p}fanouts (
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
        )""",
        """CREATE TABLE IF NOT EXISTS {p}fan_items (
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
        )""",
        """CREATE TABLE IF NOT EXISTS {p}schedules (
            name          {TEXT} PRIMARY KEY,
            definition    {TEXT} NOT NULL,
            timing        {TEXT} NOT NULL,
            next_fire_at  {REAL} NOT NULL,
            paused        {BOOL} NOT NULL,
            last_tick     {REAL},
            last_fired_at {REAL},
            updated_at    {REAL} NOT NULL
        )""",
        # background jobs (bulk reprocess): the job as JSON plus what claims and staleness checks need
        """CREATE TABLE IF NOT EXISTS {p}jobs (
            job_id      {TEXT} PRIMARY KEY,
            status      {TEXT} NOT NULL,
            owner       {TEXT} NOT NULL,
            job         {JSON} NOT NULL,
            created_at  {REAL} NOT NULL,
            updated_at  {REAL} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS processes_due_at ON {p}processes (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS processes_expires_at ON {p}processes (expires_at) WHERE expires_at IS NOT NULL",
        # lists and stats: newest first, keyset on (created_at, process_id); by status for status filters
        "CREATE INDEX IF NOT EXISTS processes_created ON {p}processes (created_at DESC, process_id DESC)",
        "CREATE INDEX IF NOT EXISTS processes_status_created"
        " ON {p}processes (status, created_at DESC, process_id DESC)",
        "CREATE INDEX IF NOT EXISTS jobs_created ON {p}jobs (created_at DESC, job_id DESC)",
    )),
    Migration(version=2, description="derived list columns: retrying, waiting_summary",
              columns=frozenset({"retrying", "waiting_summary"}), step=_derived_list_columns, statements=(
        "ALTER TABLE {p}processes ADD COLUMN retrying {BOOL} NOT NULL DEFAULT false",
        "ALTER TABLE {p}processes ADD COLUMN waiting_summary {TEXT}",
        "DROP INDEX IF EXISTS {p}processes_retrying",  # its predicate read the document's JSON
        # status=retrying lists: the few processes in a retry backoff or re-send (statements.RETRYING_SQL)
        "CREATE INDEX IF NOT EXISTS processes_retrying_created ON {p}processes (created_at DESC, process_id DESC)"
        " WHERE retrying",
    )),
    Migration(version=3, description="ended_at: when a finished process ended (statistics)",
              columns=frozenset({"ended_at"}), statements=(
        "ALTER TABLE {p}processes ADD COLUMN ended_at {REAL}",
        # a finished process's last transition is its end
        "UPDATE {p}processes SET ended_at = updated_at WHERE status IN ('completed', 'failed', 'cancelled')",
        # set once per process, so running transitions stay HOT
        "CREATE INDEX IF NOT EXISTS processes_ended ON {p}processes (ended_at) WHERE ended_at IS NOT NULL",
    )),
    Migration(version=4, description="search attributes", columns=frozenset({"search"}), step=_search,
              statements=("ALTER TABLE {p}processes ADD COLUMN search {JSON}",),
              # containment filters; SQLite scans
              postgresql=("CREATE INDEX IF NOT EXISTS processes_search ON {p}processes"
                          " USING gin (search jsonb_path_ops) WHERE search IS NOT NULL",)),
    Migration(version=5, description="deploy columns: case_version, stage, reach of live processes", step=_reach,
              statements=(
        "ALTER TABLE {p}processes ADD COLUMN case_version {INT}",
        "ALTER TABLE {p}processes ADD COLUMN stage {TEXT}",
        "ALTER TABLE {p}processes ADD COLUMN reach {TEXT}",
        "ALTER TABLE {p}processes ADD COLUMN derived_version {INT}",  # see statements.CREATE_COLUMNS
        "UPDATE {p}processes SET case_version = {doc_case_version}, stage = {doc_stage}",
        # deploy queries: live processes by (case, version). Neither changes in a process's life and status is
        # indexed already, so the index costs running transitions no HOT update.
        f"CREATE INDEX IF NOT EXISTS processes_live ON {{p}}processes (case_name, case_version) WHERE {LIVE}",
    )),
    Migration(version=6, description="worker registry (stageflow deploy status)", statements=(
        """CREATE TABLE IF NOT EXISTS {p}workers (
            worker_id   {TEXT} PRIMARY KEY,
            release     {TEXT} NOT NULL,
            carries     {JSON} NOT NULL,
            started_at  {REAL} NOT NULL,
            last_seen   {REAL} NOT NULL,
            heartbeat_s {REAL} NOT NULL
        )""",
    )),
    Migration(version=7, description="stored workflows (blueprints changed at run time)",
              statements=WORKFLOW_TABLES),
)


def render(d: Dialect, text: str, prefix: str) -> str:
    return text.format(
        p=prefix, processes_options=d.processes_options, doc_stage=d.json_field("doc", "stage"),
        doc_case_version=d.json_field("doc", "case_version", kind="int"), **d.types,
    )
