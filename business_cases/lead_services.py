"""The lead-sync example's ``lead_writer`` service: writes one CRM lead to the database per command.

    stageflow services business_cases.lead_services     # tables in STAGEFLOW_SERVICES_DB_URL (or the store's)

The handler runs in the service inbox's transaction, so the write and the taskId's inbox row commit
together: a command delivered twice (a killed service, a redelivery after a worker crash) writes once and
gets the recorded reply the second time. ``leads`` holds the newest copy of each lead; ``lead_writes``
has one row per write (export, lead) with no unique key, so a doubled write would show as a second row.
The SQL runs on PostgreSQL and SQLite alike (the embedded demo).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from framework.messages import ServiceCommand
from framework.service.inbox import ServiceTransaction

SETUP_SQL = [
    "CREATE TABLE IF NOT EXISTS leads (lead_id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,"
    " company TEXT, export_id TEXT NOT NULL, synced_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS lead_writes (export_id TEXT NOT NULL, lead_id TEXT NOT NULL, written_at TEXT NOT NULL)",
]


async def write_lead(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    export_id, lead = command.payload["export_id"], command.payload["lead"]
    now = datetime.now(UTC).isoformat()
    await tx.execute(
        "INSERT INTO leads (lead_id, email, name, company, export_id, synced_at) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (lead_id) DO UPDATE SET email = excluded.email, name = excluded.name,"
        " company = excluded.company, export_id = excluded.export_id, synced_at = excluded.synced_at",
        lead["id"], lead["email"], lead["name"], lead.get("company"), export_id, now,
    )
    await tx.execute("INSERT INTO lead_writes (export_id, lead_id, written_at) VALUES ($1, $2, $3)",
                     export_id, lead["id"], now)
    return {"lead_id": lead["id"]}


HANDLERS = {"lead_writer": write_lead}
