"""The ``effects`` service for tests: each command writes one row to ``effects`` in the inbox's
transaction. The table has no unique key on purpose: it is the witness that counts how often an effect
was applied, so a doubled effect would show as two rows."""

from __future__ import annotations

from typing import Any

from framework.messages import ServiceCommand
from framework.service import ServiceTransaction

SETUP_SQL = [
    "CREATE TABLE IF NOT EXISTS effects (task_id text NOT NULL, process_id text NOT NULL, step int NOT NULL)"
]


async def record_effect(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    payload = command.payload
    await tx.execute(
        "INSERT INTO effects (task_id, process_id, step) VALUES ($1, $2, $3)",
        command.task_id, payload["process_id"], payload["step"],
    )
    return {"step": payload["step"], "ok": True}


HANDLERS = {"effects": record_effect}
