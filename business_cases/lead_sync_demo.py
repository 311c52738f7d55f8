"""The lead-sync part of the blueprint demo: the CRM stand-in, the ``lead_writer`` service, and a watcher
that lets the schedule fire a few syncs (new leads sign up at the CRM between them) and reads back what was
written.

The demo runs ``blueprints/lead_sync.yaml`` with a fast schedule of its own (every 2 s, under another name,
so it never touches the real ``lead-sync`` schedule's row in a shared store).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import yaml

from business_cases.lead_services import SETUP_SQL
from framework.app import Stageflow
from framework.case import BusinessCase
from framework.document import ProcessDocument
from framework.service.hosting import inbox_from_url
from framework.service.inbox import Inbox, SqliteInbox
from framework.settings import Settings
from framework.store.base import ProcessFilter

LEAD_SYNC = Path(__file__).resolve().parent / "blueprints" / "lead_sync.yaml"
DEMO_SCHEDULE: dict[str, Any] = {"name": "lead-sync-demo", "cron": "*/2 * * * * *", "timezone": "Europe/Berlin",
                 "input": {"segment": "b2b"}}


def demo_blueprint() -> dict[str, Any]:
    """``lead_sync.yaml`` with the demo's fast schedule in place of its office-hours one."""
    data = yaml.safe_load(LEAD_SYNC.read_text())
    data["schedules"] = [DEMO_SCHEDULE]
    return data


def lead_writer_inbox(settings: Settings, tmp_dir: str) -> Inbox:
    """The lead tables beside the store: the store's PostgreSQL, or a SQLite file of their own (embedded)."""
    if settings.store_url.startswith("sqlite"):
        return SqliteInbox(os.path.join(tmp_dir, "leads.db"), setup_sql=SETUP_SQL)
    return inbox_from_url(settings.store_url, setup_sql=SETUP_SQL)


async def watch_syncs(flow: Stageflow, inbox: Inbox, case: type[BusinessCase], *, since: float, syncs: int = 2,
                      timeout_s: float = 60.0) -> dict[str, Any]:
    """Let the schedule fire ``syncs`` syncs since ``since``, pause it, wait for what it started, and report
    each sync and the lead tables."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if sum(d.status.finished for d in await _syncs(flow, case, since)) >= syncs:
                break
            await asyncio.sleep(0.2)
    finally:
        await flow.schedules.pause(DEMO_SCHEDULE["name"])
    while time.monotonic() < deadline and not all(d.status.finished for d in await _syncs(flow, case, since)):
        await asyncio.sleep(0.2)  # a tick that fired just before the pause
    docs = await _syncs(flow, case, since)
    exports = [d.result["export_id"] for d in docs if d.result]
    async with inbox.transaction() as tx:
        per_write = await tx.fetch("SELECT export_id, lead_id, count(*) AS n FROM lead_writes GROUP BY 1, 2")
        leads = await tx.fetchval("SELECT count(*) FROM leads")
    ours = [w for w in per_write if w["export_id"] in exports]
    return {
        "syncs": [{"tick": d.client_key.split(":", 2)[2] if d.client_key else None, "status": d.status.value,
                   **(d.result or {})} for d in docs],
        "lead_writes": sum(w["n"] for w in ours),
        "doubled_writes": sum(w["n"] - 1 for w in ours),
        "leads_in_table": leads,
    }


async def _syncs(flow: Stageflow, case: type[BusinessCase], since: float) -> list[ProcessDocument]:
    ids = await flow.store.find_ids(ProcessFilter(case=case.name, created_after=since))
    docs = [await flow.get(pid) for pid in ids]
    scheduled = [d for d in docs if d.client_key and d.client_key.startswith("schedule:")]
    return sorted(scheduled, key=lambda d: d.client_key or "")
