"""The columns a store writes beside the document so that queries never parse the document's state.

``derived_columns`` is the one place a store reads ``doc.waiting``: every backend calls it at ``create`` and
``commit`` time and writes what it returns, so ``status=retrying`` is an indexed flag and a list row shows
what a process waits for without the document.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from framework.document import ProcessDocument, Status
from framework.state import is_retrying
from framework.store.records import WAITING_SUMMARY_KEYS


class Derived(NamedTuple):
    retrying: bool  # waiting to try a failed stage (retry backoff) or a failed service call (re-send) again
    waiting_summary: str | None  # JSON of the waiting keys a list row shows (``records.summary``), if waiting
    search: str | None  # JSON of the search attributes (``framework.search``), if any


def derived_columns(doc: ProcessDocument) -> Derived:
    """What the list columns of ``doc`` hold. Called once per create and commit: keep it cheap."""
    waiting = doc.waiting
    search = orjson.dumps(doc.search).decode() if doc.search else None
    if waiting is None:
        return Derived(False, None, search)
    shown = {k: v for k in WAITING_SUMMARY_KEYS if (v := getattr(waiting, k, None)) is not None}
    return Derived(doc.status is Status.WAITING and is_retrying(waiting), orjson.dumps(shown).decode(), search)
