"""Figures from the store's history table: transitions per second and per-hop latency.

Every committed transition writes one history row. The ``started`` row (version 1) carries ``at``, the
time the process was created; every later row (version > 1, one per stage run) carries ``at``, the time
its stage started running (after its worker received the message and loaded the document), and
``duration_ms``, how long the stage code ran. All times come from ``time.time()`` on this machine.

* A **transition** is one history row with version > 1 (``bench_chain`` has five per process).
* **Transitions per second** = transitions / (last stage end - first process creation) over the
  processes of one phase: the window is read from the history rows, not from the polling loop.
* **Hop latency** of a transition = its stage's ``at`` minus the end of the previous transition's stage
  (previous ``at`` + ``duration_ms``; for the first stage, the creation time). It is what a process waits
  between two stages: committing the previous transition (one PostgreSQL round trip), publishing its
  message with a confirm, RabbitMQ delivery, time queued behind other messages, and loading the
  document. For a stage resumed by a service reply it also includes the whole service round trip
  (command queue, inbox transaction, reply publish), reported apart as the ``service hop``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson


@dataclass
class PhaseFigures:
    processes: int = 0
    completed: int = 0
    failed: int = 0
    transitions: int = 0
    window_s: float = 0.0
    hops_ms: list[float] = field(default_factory=list)  # every hop, service hops included
    service_hops_ms: list[float] = field(default_factory=list)

    @property
    def transitions_per_s(self) -> float:
        return self.transitions / self.window_s if self.window_s > 0 else 0.0


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def phase_figures(conn: asyncpg.Connection, schema: str, process_ids: Iterable[str]) -> PhaseFigures:
    ids = list(process_ids)
    figures = PhaseFigures(processes=len(ids))
    if not ids:
        return figures
    statuses = await conn.fetch(
        f"SELECT status, count(*) AS n FROM {schema}.processes WHERE process_id = ANY($1) GROUP BY status", ids
    )
    by_status = {r["status"]: r["n"] for r in statuses}
    figures.completed = by_status.get("completed", 0)
    figures.failed = by_status.get("failed", 0)
    rows = await conn.fetch(
        f"SELECT process_id, entry FROM {schema}.history WHERE process_id = ANY($1) ORDER BY process_id, version",
        ids,
    )
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        entries[row["process_id"]].append(orjson.loads(row["entry"]))
    first_start = math.inf
    last_end = -math.inf
    for history in entries.values():
        first_start = min(first_start, history[0]["at"])
        previous_end = history[0]["at"] + history[0].get("duration_ms", 0.0) / 1000
        previous_event = history[0].get("event")
        for entry in history[1:]:
            figures.transitions += 1
            hop_ms = (entry["at"] - previous_end) * 1000
            figures.hops_ms.append(hop_ms)
            if previous_event == "call":
                figures.service_hops_ms.append(hop_ms)
            previous_end = entry["at"] + entry.get("duration_ms", 0.0) / 1000
            previous_event = entry.get("event")
        last_end = max(last_end, previous_end)
    if figures.transitions:
        figures.window_s = last_end - first_start
    return figures

