"""Stored workflows (``framework.workflows``) for both SQL backends: the tables, the statements, the methods.

Two tables: ``workflows`` (one row per name: active or not, newest version, who/when) and ``workflow_versions``
(one immutable row per version, the blueprint as JSON). Saving a version is one transaction: the version row,
inserted only if ``(name, version)`` is free (two concurrent updates cannot both make version 3), and the
name's row pointing at it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from framework.store.records import WorkflowRow, WorkflowVersion
from framework.store.sql.dialect import Dialect
from framework.store.sql.executor import Executor

# Migration 7 (``schema.MIGRATIONS``): one statement per string.
WORKFLOW_TABLES = (
    """CREATE TABLE IF NOT EXISTS {p}workflows (
        name        {TEXT} PRIMARY KEY,
        active      {BOOL} NOT NULL,
        latest      {INT} NOT NULL,
        created_at  {REAL} NOT NULL,
        created_by  {TEXT} NOT NULL,
        updated_at  {REAL} NOT NULL,
        updated_by  {TEXT} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {p}workflow_versions (
        name        {TEXT} NOT NULL,
        version     {INT} NOT NULL,
        definition  {JSON} NOT NULL,
        created_at  {REAL} NOT NULL,
        created_by  {TEXT} NOT NULL,
        PRIMARY KEY (name, version)
    )""",
)

_ROW = "name, active, latest, created_at, created_by, updated_at, updated_by"
_VERSION = "name, version, definition, created_at, created_by"


class WorkflowStatements:
    def __init__(self, d: Dialect, prefix: str) -> None:
        p, sql = prefix, d.sql
        self.insert_version = sql(
            f"INSERT INTO {p}workflow_versions ({_VERSION}) VALUES ($1, $2, $3::jsonb, $4, $5)"
            " ON CONFLICT (name, version) DO NOTHING")
        # a new name is active; a new version of a known name keeps its active flag
        self.point_at = sql(
            f"INSERT INTO {p}workflows ({_ROW}) VALUES ($1, true, $2, $3, $4, $3, $4)"
            " ON CONFLICT (name) DO UPDATE SET latest = EXCLUDED.latest, updated_at = EXCLUDED.updated_at,"
            " updated_by = EXCLUDED.updated_by")
        self.set_active = sql(
            f"UPDATE {p}workflows SET active = $2, updated_at = $3, updated_by = $4 WHERE name = $1")
        self.rows = sql(f"SELECT {_ROW} FROM {p}workflows ORDER BY name")
        self.versions = sql(
            f"SELECT {_VERSION} FROM {p}workflow_versions WHERE name = $1 AND version > $2 ORDER BY version")


def _row(r: Sequence[Any]) -> WorkflowRow:
    return WorkflowRow(r[0], bool(r[1]), r[2], r[3], r[4], r[5], r[6])


def _version(r: Sequence[Any]) -> WorkflowVersion:
    definition = r[2] if isinstance(r[2], str) else str(r[2])
    return WorkflowVersion(r[0], r[1], definition, r[3], r[4])


class SqlWorkflows:
    """The ``WorkflowStore`` methods over a backend's sessions (mixed into ``SqlStore``)."""

    _workflow_sql: WorkflowStatements

    @abstractmethod
    def _session(self) -> AbstractAsyncContextManager[Executor]: ...

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Executor]: ...

    async def add_workflow_version(self, version: WorkflowVersion) -> bool:
        sql = self._workflow_sql
        async with self._transaction() as db:
            if await db.changed(sql.insert_version, version.name, version.version, version.definition,
                                version.created_at, version.created_by) != 1:
                return False
            await db.changed(sql.point_at, version.name, version.version, version.created_at, version.created_by)
            return True

    async def set_workflow_active(self, name: str, active: bool, *, by: str, now: float) -> bool:
        async with self._session() as db:
            return await db.changed(self._workflow_sql.set_active, name, active, now, by) == 1

    async def workflows(self) -> list[WorkflowRow]:
        async with self._session() as db:
            return [_row(r) for r in await db.rows(self._workflow_sql.rows)]

    async def workflow_versions(self, name: str, *, after: int = 0) -> list[WorkflowVersion]:
        async with self._session() as db:
            return [_version(r) for r in await db.rows(self._workflow_sql.versions, name, after)]
