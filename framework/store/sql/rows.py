"""Rows in and out, for both SQL backends: the parameter rows of creates and commits, and the mappers from
result rows (read by position, in the column order of ``statements``) to the contract's types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from framework.document import ProcessDocument
from framework.fanout import FanOutState, ItemRow
from framework.state import HistoryEntry
from framework.store.derived import derived_columns
from framework.store.records import PageKey, ScheduleRow, summary

# process_id, case, client_key, status, version, doc, due_at, created_at, history entry, retrying,
# waiting_summary, search, ended_at, case_version, stage, reach: the parameters of ``statements.CREATE_VALUES``
CreateRow = tuple[
    str, str, str | None, str, int, str, float | None, float, str, bool, str | None, str | None, float | None,
    int, str | None, str | None]
# process_id, expected version, doc, status, due_at, updated_at, history entry, expires_at, retrying,
# waiting_summary, search, ended_at, case_version, stage, reach: the parameters of ``statements.COMMIT_SET``
CommitRow = tuple[
    str, int, str, str, float | None, float, str, float | None, bool, str | None, str | None, float | None,
    int, str | None, str | None]


def create_row(doc: ProcessDocument, entry: HistoryEntry, due_at: float | None) -> CreateRow:
    derived = derived_columns(doc)
    return (doc.process_id, doc.case, doc.client_key, doc.status.value, doc.version, doc.to_json().decode(), due_at,
            doc.created_at, orjson.dumps(entry).decode(), *derived)


def commit_row(
    doc: ProcessDocument, entry: HistoryEntry, expected_version: int, due_at: float | None, expires_at: float | None
) -> CommitRow:
    """Encoded here, in the caller's task, so a value that is not JSON fails its own caller
    (``orjson.JSONEncodeError``), never a batch."""
    return (doc.process_id, expected_version, doc.to_json().decode(), doc.status.value, due_at, doc.updated_at,
            orjson.dumps(entry).decode(), expires_at, *derived_columns(doc))


def json_or_none(raw: str | bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def summary_row(r: Sequence[Any]) -> dict[str, Any]:
    """A row of ``Statements.summary_columns``."""
    return summary(
        process_id=r[0], case=r[1], status=r[2], client_key=r[3], created_at=r[4], updated_at=r[5],
        case_version=r[6], stage=r[7], ended_at=r[8], waiting=json_or_none(r[9]), error=json_or_none(r[10]),
    )


def page_key(rows: Sequence[Sequence[Any]]) -> PageKey | None:
    """The keyset position after the last of ``rows`` (``summary_columns``: created_at is the fifth)."""
    return (rows[-1][4], rows[-1][0]) if rows else None


def fan_state(r: Sequence[Any]) -> FanOutState:
    """A row that starts with ``statements.FAN_STATE_COLUMNS``."""
    return FanOutState(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8])


def item_row(r: Sequence[Any]) -> ItemRow:
    """A row of ``statements.ITEM_COLUMNS``."""
    return ItemRow(r[0], r[1], orjson.loads(r[2]), json_or_none(r[3]), r[4], r[5])


def schedule_row(r: Sequence[Any]) -> ScheduleRow:
    """A row of ``statements.SCHEDULE_COLUMNS``."""
    return ScheduleRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7])
