"""Filling derived columns that a migration added, from the documents of live processes, in batches.

Only what SQL cannot say is done here (the typed wait of a document, read by ``derived_columns``); finished
processes wait for nothing and keep the columns' defaults. Batches walk the process ids in order, so memory
stays bounded however many processes there are, and progress is logged.
"""

from __future__ import annotations

import time

import structlog

from framework.document import ProcessDocument
from framework.store.derived import derived_columns
from framework.store.sql.dialect import Dialect
from framework.store.sql.executor import Executor

log = structlog.get_logger("stageflow.store")

BATCH = 1000
_CASTS = {"search": "::jsonb"}  # a parameter's type where the column's is not text, number or boolean
_LOG_EVERY_S = 5.0


async def backfill(db: Executor, d: Dialect, p: str, columns: tuple[str, ...], *, version: int,
                   batch: int = BATCH) -> int:
    """Write ``columns`` (fields of ``derived_columns``) of every live process; how many. Writing ``reach``
    also marks the row's deploy columns as derived from its current version (``derived_version``)."""
    select = d.sql(f"SELECT process_id, doc FROM {p}processes WHERE status IN ('running', 'waiting')"
                   " AND process_id > $1 ORDER BY process_id LIMIT $2")
    sets = ", ".join(f"{c} = ${n}{_CASTS.get(c, '')}" for n, c in enumerate(columns, 2))
    if "reach" in columns:
        sets += ", derived_version = version"
    update = d.sql(f"UPDATE {p}processes SET {sets} WHERE process_id = $1")
    done, after, logged = 0, "", time.monotonic()
    while rows := await db.rows(select, after, batch):
        values = []
        for process_id, raw in rows:
            derived = derived_columns(ProcessDocument.from_json(raw))
            values.append((process_id, *(getattr(derived, c) for c in columns)))
        await db.many(update, values)
        done, after = done + len(rows), rows[-1][0]
        if time.monotonic() - logged >= _LOG_EVERY_S:
            log.info("migration backfilling", migration=version, columns=columns, processes=done)
            logged = time.monotonic()
    if done:
        log.info("migration backfilled", migration=version, columns=columns, processes=done)
    return done
