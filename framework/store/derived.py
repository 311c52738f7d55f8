"""The columns a store writes beside the document so that queries never parse the document's state.

``derived_columns`` is the one place a store reads ``doc.waiting``: every backend calls it at ``create`` and
``commit`` time and writes what it returns, so ``status=retrying`` is an indexed flag, a list row shows
what a process waits for without the document, the statistics find finished processes by their end time, and
a deploy check knows which (case, version, stage) each live process may still need (``reach``).
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from framework.document import ProcessDocument, Status
from framework.state import is_retrying, resumable_stages
from framework.store.records import WAITING_SUMMARY_KEYS


class Derived(NamedTuple):
    retrying: bool  # waiting to try a failed stage (retry backoff) or a failed service call (re-send) again
    waiting_summary: str | None  # JSON of the waiting keys a list row shows (``records.summary``), if waiting
    search: str | None  # JSON of the search attributes (``framework.search``), if any
    # when a finished process ended (None while it runs); set once, so running transitions stay HOT updates
    ended_at: float | None
    case_version: int
    stage: str | None
    reach: str | None  # live processes only: ``reach(doc)``


def reach(doc: ProcessDocument) -> str | None:
    """The stages this live process can still be resumed at without a new start, sorted and space-joined
    (stage names hold no space): its current stage and those its wait names (``state.resumable_stages``:
    the fired stage, the resumed one, the one that asked). None once it has finished. The document records no
    pending ``on_failed`` target: a ``Failure.went_to`` is where it already went, its stage."""
    if doc.status.finished:
        return None
    stages = set(resumable_stages(doc.waiting))
    if doc.stage is not None:
        stages.add(doc.stage)
    return " ".join(sorted(stages)) or None


def derived_columns(doc: ProcessDocument) -> Derived:
    """What the list columns of ``doc`` hold. Called once per create and commit: keep it cheap."""
    waiting = doc.waiting
    search = orjson.dumps(doc.search).decode() if doc.search else None
    ended_at = doc.ended_at if doc.status.finished else None
    if waiting is None:
        return Derived(False, None, search, ended_at, doc.case_version, doc.stage, reach(doc))
    shown = {k: v for k in WAITING_SUMMARY_KEYS if (v := getattr(waiting, k, None)) is not None}
    return Derived(doc.status is Status.WAITING and is_retrying(waiting), orjson.dumps(shown).decode(), search,
                   ended_at, doc.case_version, doc.stage, reach(doc))
