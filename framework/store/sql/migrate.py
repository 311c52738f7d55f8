"""Applying the numbered migrations (``schema.MIGRATIONS``) to a store, each exactly once.

The caller holds the store's migration lock for one transaction (PostgreSQL: an advisory lock keyed from the
schema name; SQLite: ``BEGIN IMMEDIATE``), so workers that start together wait for the first, then find
nothing left to do, and an upgrade that fails changes nothing. ``{p}schema_migrations`` records each applied
migration. A store made before that table (tables but no record) is recognised at the newest migration whose
columns it has. A store that records a migration this code does not know was migrated by a newer release:
``SchemaVersionError``, and nothing is changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from framework.errors import SchemaVersionError
from framework.store.sql.dialect import Dialect
from framework.store.sql.executor import Executor
from framework.store.sql.schema import MIGRATIONS, Migration, render

log = structlog.get_logger("stageflow.store")

_TABLE = """CREATE TABLE IF NOT EXISTS {p}schema_migrations (
    version     {INT} PRIMARY KEY,
    description {TEXT} NOT NULL,
    applied_at  {REAL} NOT NULL
)"""
RECOGNISED = " (recognised in a store of an earlier release)"


async def migrate(
    db: Executor, d: Dialect, *, schema: str | None, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, ...]:
    """Apply the migrations ``db``'s store has not had, in order; the versions applied (or recognised)."""
    p = f"{schema}." if schema else ""
    if schema:
        await db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    had_record = bool(await db.column_names(schema, "schema_migrations"))
    await db.execute(render(d, _TABLE, p))
    record = d.sql(f"INSERT INTO {p}schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
    if had_record:
        applied = {int(r[0]) for r in await db.rows(f"SELECT version FROM {p}schema_migrations")}
    else:
        applied = set(await _recognise(db, d, schema, p, migrations))
        await db.many(record, [(m.version, m.description + RECOGNISED, time.time())
                               for m in migrations if m.version in applied])
    _refuse_unknown(applied, migrations)
    done = sorted(applied) if not had_record else []
    for migration in migrations:
        if migration.version in applied:
            continue
        for text in (*migration.statements, *(migration.postgresql if d.name == "postgresql" else ())):
            await db.execute(render(d, text, p))
        if migration.step is not None:
            await migration.step(db, d, p)
        await db.changed(record, migration.version, migration.description, time.time())
        log.debug("store migrated", migration=migration.version, description=migration.description)
        done.append(migration.version)
    if done:
        log.info("store migrated", migrations=done, schema=schema)
    return tuple(done)


async def _recognise(
    db: Executor, d: Dialect, schema: str | None, p: str, migrations: Sequence[Migration]
) -> list[int]:
    """The migrations a store without the record has: none if it has no tables, else the longest run of
    migrations whose columns it shows. Migration 1's ``IF NOT EXISTS`` statements run again first, for side
    tables a still older release had not made yet."""
    columns = await db.column_names(schema, "processes")
    if not columns:
        return []
    first = migrations[0]
    for text in first.statements:
        await db.execute(render(d, text, p))
    found = []
    for migration in migrations:
        if migration.columns is None or not migration.columns <= columns:
            break
        found.append(migration.version)
    log.info("store of an earlier release recognised", migrations=found)
    return found


def _refuse_unknown(applied: set[int], migrations: Sequence[Migration]) -> None:
    unknown = sorted(applied - {m.version for m in migrations})
    if unknown:
        newest = max(m.version for m in migrations)
        raise SchemaVersionError(
            f"the store has schema migration {unknown[-1]}, but this release knows migrations up to {newest}: "
            "a newer release migrated it",
            hint="run a release at least as new as the one that migrated the store (migrations are forward-only: "
            "going back needs a restore of the store from before the upgrade)",
        )
