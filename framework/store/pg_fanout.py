"""PostgreSQL store: fan-out counter rows and items (mixed into ``PostgresStore``)."""

from __future__ import annotations

from typing import Any

import orjson

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemCompletion, ItemRow, NewFanOut, complete


class PostgresFanOuts:
    """The fan-out methods of ``PostgresStore`` (see ``framework.fanout``), kept apart from the document ones."""

    _schema: str
    _sql_commit_fan_out: str
    _sql_fan_state: str
    _sql_fan_items: str
    _connection: Any  # PostgresStore's

    async def commit_fan_out(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        fan_out: NewFanOut,
    ) -> bool:
        state = fan_out.initial_state()
        async with self._connection() as conn:
            count = await conn.fetchval(
                self._sql_commit_fan_out, doc.process_id, expected_version, doc.to_json().decode(), doc.status.value,
                due_at, doc.updated_at, orjson.dumps(entry).decode(), state.group, state.total, state.window,
                state.tolerate, state.first, state.next_index, state.decided, fan_out.specs,
            )
        return count == 1

    async def complete_item(
        self, process_id: str, group: int, index: int, *, ok: bool, result: Any, error: str | None, now: float
    ) -> ItemCompletion | None:
        s = self._schema
        async with self._connection() as conn, conn.transaction():
            # The counter row's lock serialises the completions of one fan-out: two statements hold it. The item
            # row is locked too, so a duplicate that waited for the lock sees the item as its first copy left it.
            row = await conn.fetchrow(
                f"""SELECT f.grp, f.total, f.win, f.tolerate, f.first, f.next_index, f.done, f.failed, f.decided,
                           i.status AS item_status, i.released
                    FROM {s}.fanouts f JOIN {s}.fan_items i ON i.process_id = f.process_id AND i.grp = f.grp
                    WHERE f.process_id = $1 AND f.grp = $2 AND i.idx = $3 FOR UPDATE""",
                process_id, group, index,
            )
            if row is None:
                return None
            state = _fan_state(row)
            if row["item_status"] != "dispatched":  # a duplicate: hand back what its first completion released
                found = [] if row["released"] is None else await conn.fetch(
                    self._sql_fan_items, process_id, group, row["released"] - 1, "dispatched", None, 1)
                released = _item_row(found[0]) if found and found[0]["idx"] == row["released"] else None
                return ItemCompletion(False, state, released, False)
            new, release = complete(state, ok)
            written = await conn.fetchrow(
                f"""WITH item AS (
                        UPDATE {s}.fan_items SET status = $4, result = $5::jsonb, error = $6, released = $7,
                                                 updated_at = $8
                        WHERE process_id = $1 AND grp = $2 AND idx = $3 AND status = 'dispatched'
                        RETURNING idx),
                    fan AS (
                        UPDATE {s}.fanouts SET next_index = $9, done = $10, failed = $11, decided = $12
                        WHERE process_id = $1 AND grp = $2 AND EXISTS (SELECT 1 FROM item)),
                    rel AS (
                        UPDATE {s}.fan_items SET status = 'dispatched', updated_at = $8
                        WHERE process_id = $1 AND grp = $2 AND idx = $7 AND EXISTS (SELECT 1 FROM item)
                        RETURNING idx, status, spec, result, error, updated_at)
                    SELECT EXISTS (SELECT 1 FROM item) AS applied, rel.* FROM (SELECT 1) AS one LEFT JOIN rel ON true""",
                process_id, group, index, "done" if ok else "failed", orjson.dumps(result).decode() if ok else None,
                error, release, now, new.next_index, new.done, new.failed, new.decided,
            )
            if not written["applied"]:  # belt and braces: the item was not dispatched after all; nothing written
                return ItemCompletion(False, state, None, False)
        return ItemCompletion(True, new, _item_row(written) if written["idx"] is not None else None,
                              new.decided is not None and state.decided is None)

    async def fan_out_state(self, process_id: str, group: int) -> FanOutState | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql_fan_state, process_id, group)
        return None if row is None else _fan_state(row)

    async def fan_out_items(
        self, process_id: str, group: int, *, status: str | None = None, after: int = -1, limit: int | None = None,
        updated_before: float | None = None,
    ) -> list[ItemRow]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql_fan_items, process_id, group, after, status, updated_before, limit)
        return [_item_row(r) for r in rows]


def _fan_state(row: Any) -> FanOutState:
    return FanOutState(row["grp"], row["total"], row["win"], row["tolerate"], row["first"], row["next_index"],
                       row["done"], row["failed"], row["decided"])


def _item_row(row: Any) -> ItemRow:
    result = None if row["result"] is None else orjson.loads(row["result"])
    return ItemRow(row["idx"], row["status"], orjson.loads(row["spec"]), result, row["error"], row["updated_at"])
