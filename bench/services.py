"""The benchmark's service (run with ``python -m framework services bench.services``).

``bench_echo`` does no work of its own, so the figure measures the framework: the service SDK still runs
each command in a PostgresInbox transaction (claim the taskId, record the reply) and publishes the reply.
"""

from __future__ import annotations

from typing import Any

from framework.messages import ServiceCommand
from framework.service import ServiceTransaction


async def bench_echo(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    return {"echo": command.payload.get("n") if isinstance(command.payload, dict) else None}


HANDLERS = {"bench_echo": bench_echo}
