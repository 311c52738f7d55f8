"""The services the e-commerce order talks to, written with the service SDK.

``scheduling`` picks a slot for the desired date; ``third_party_jobs`` stands in for a third party that
creates a job, and writes it to its own ``example_jobs`` table in the same transaction as its inbox row,
so a redelivered command never creates a second job.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from framework.errors import ServiceError
from framework.messages import ServiceCommand
from framework.service import ServiceTransaction

JOBS_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS example_jobs ("
    " job_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, slot TEXT NOT NULL, task_id TEXT NOT NULL UNIQUE)"
)


async def schedule(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    payload = command.payload or {}
    desired = payload.get("desired_date")
    if not desired:
        raise ServiceError("desired_date is required")
    # A deterministic slot per order, so the example is reproducible.
    hour = 8 + int(hashlib.sha256(str(payload.get("order_id")).encode()).hexdigest(), 16) % 9
    return {"slot": f"{desired}T{hour:02d}:00", "technician": f"tech-{hour % 3 + 1}"}


async def create_job(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    payload = command.payload or {}
    job_id = f"JOB-{uuid.uuid4().hex[:12]}"
    await tx.execute(
        "INSERT INTO example_jobs (job_id, order_id, slot, task_id) VALUES ($1, $2, $3, $4)",
        job_id, payload["order_id"], payload["slot"], command.task_id,
    )
    return {"job_id": job_id}


HANDLERS = {"scheduling": schedule, "third_party_jobs": create_job}
SETUP_SQL = [JOBS_TABLE_SQL]  # pass to the inbox: PostgresInbox(dsn, setup_sql=SETUP_SQL)
