"""PostgreSQL store: the fan-out writes, each one statement (mixed into ``PostgresStore``; the reads and the
logic of ``complete_item`` are the shared ones of ``framework.store.sql.common``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from framework.document import ProcessDocument
from framework.fanout import NewFanOut
from framework.state import HistoryEntry
from framework.store.sql.common import Completion
from framework.store.sql.executor import Executor
from framework.store.sql.pg_connection import Pooled
from framework.store.sql.rows import commit_row
from framework.store.sql.statements import COMMIT_SET, ITEM_COLUMNS


def fan_out_statements(p: str) -> tuple[str, str]:
    """The fan-out transition (``commit_row`` then the fan-out's $16..$23) and an item's completion
    (``Completion``), for the table prefix ``p``."""
    commit_fan_out = f"""
        WITH upd AS (
            UPDATE {p}processes SET {COMMIT_SET} WHERE process_id = $1 AND version = $2 RETURNING process_id),
        hist AS (INSERT INTO {p}history (process_id, version, entry) SELECT process_id, $2 + 1, $7::jsonb FROM upd),
        fan AS (
            INSERT INTO {p}fanouts (process_id, grp, total, win, tolerate, first, next_index, done, failed, decided)
            SELECT process_id, $16, $17, $18, $19, $20, $21, 0, 0, $22 FROM upd),
        items AS (
            INSERT INTO {p}fan_items (process_id, grp, idx, status, spec, updated_at)
            SELECT u.process_id, $16, t.ord - 1, CASE WHEN t.ord <= $21 THEN 'dispatched' ELSE 'pending' END,
                   t.spec::jsonb, $6
            FROM upd u, unnest($23::text[]) WITH ORDINALITY AS t(spec, ord))
        SELECT count(*) FROM upd"""
    # The item (only if still dispatched), the counters and the released item, in one statement.
    completion = f"""
        WITH item AS (
            UPDATE {p}fan_items SET status = $4, result = $5::jsonb, error = $6, released = $7, updated_at = $8
            WHERE process_id = $1 AND grp = $2 AND idx = $3 AND status = 'dispatched'
            RETURNING idx),
        fan AS (
            UPDATE {p}fanouts SET next_index = $9, done = $10, failed = $11, decided = $12
            WHERE process_id = $1 AND grp = $2 AND EXISTS (SELECT 1 FROM item)),
        rel AS (
            UPDATE {p}fan_items SET status = 'dispatched', updated_at = $8
            WHERE process_id = $1 AND grp = $2 AND idx = $7 AND EXISTS (SELECT 1 FROM item)
            RETURNING {ITEM_COLUMNS})
        SELECT EXISTS (SELECT 1 FROM item), rel.* FROM (SELECT 1) AS one LEFT JOIN rel ON true"""
    return commit_fan_out, completion


class PostgresFanOuts(ABC):
    """The fan-out writes of ``PostgresStore`` (see ``framework.fanout``)."""

    _sql_commit_fan_out: str
    _sql_completion: str

    @abstractmethod
    def _connection(self) -> Pooled:
        """A connection of the store's pool."""

    async def commit_fan_out(
        self, doc: ProcessDocument, entry: HistoryEntry, *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        s = fan_out.initial_state()
        async with self._connection() as conn:
            count = await conn.fetchval(
                self._sql_commit_fan_out, *commit_row(doc, entry, expected_version, due_at, None),
                s.group, s.total, s.window, s.tolerate, s.first, s.next_index, s.decided, fan_out.specs,
            )
        return bool(count == 1)

    async def _write_completion(self, db: Executor, completion: Completion) -> tuple[bool, Sequence[Any] | None]:
        (row,) = await db.rows(self._sql_completion, *completion)
        return row[0], (None if row[1] is None else tuple(row)[1:])
