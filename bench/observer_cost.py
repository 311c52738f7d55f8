"""Micro timing of the metrics observer: what one transition pays for it, in microseconds.

    .venv/bin/python -m bench.observer_cost

It times, per transition, the hooks the engine calls for a committed stage transition (through ``Observers``,
as the committer does), the publish stamp, the received-stamp read and the log binding. A throughput
comparison needs ``make bench`` with and without ``STAGEFLOW_METRICS_PORT`` on a quiet machine.
"""

from __future__ import annotations

import time

from framework.document import ProcessDocument, Status
from framework.logs import bind_transition
from framework.metrics import WorkerMetrics
from framework.observers import Observer, Observers
from framework.state import HistoryEntry
from framework.telemetry import PUBLISHED_AT_HEADER, publish_headers, received_message

N = 200_000


def per_call_us(fn: object, n: int = N) -> float:
    call = fn  # type: ignore[assignment]
    started = time.perf_counter()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    doc = ProcessDocument(process_id="p-1", case="order", case_version=1, status=Status.RUNNING, input={},
                          stage="charge", version=3, created_at=0.0, updated_at=0.0)
    entry: HistoryEntry = {"version": 3, "stage": "reserve", "at": 0.0, "event": "next", "duration_ms": 1.2}
    observers = Observers([WorkerMetrics()])
    headers = {PUBLISHED_AT_HEADER: repr(time.time())}
    received_message(headers)
    rows = {
        "transition_committed (counter, stage histogram, hop histogram)":
            lambda: observers.emit(Observer.transition_committed, doc, entry),
        "message_received + message_handled + publishing (no-op hooks)": lambda: (
            observers.emit(Observer.message_received, "inner", headers), observers.emit(Observer.message_handled),
            observers.emit(Observer.publishing, {})),
        "publish stamp (header dict)": publish_headers,
        "received stamp (context variable)": lambda: received_message({PUBLISHED_AT_HEADER: "1764600000.5"}),
        "log binding (5 context variables)": lambda: bind_transition(doc, "reserve"),
        "no observers (the engine's `if observers:`)": lambda: bool(Observers()),
    }
    total = 0.0
    for name, fn in rows.items():
        cost = per_call_us(fn)
        total += cost if not name.startswith("no observers") else 0.0
        print(f"{cost:7.2f} us  {name}")
    print(f"{total:7.2f} us  per transition with metrics on (the sum of the rows above but the last)")


if __name__ == "__main__":
    main()
