"""Statistics per case over the last hour: end-to-end durations, throughput, failures by stage, stuck processes.

``read_statistics(store, now)`` asks the store four bounded questions (``ProcessQueries``: range scans of the
end-time and due-time indexes) and ``case_statistics`` turns the answers into one dict per case. The gateway
serves it in ``/stats`` (cached like the counts), the admin page charts it and ``stageflow stats`` prints it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from framework.store.protocols import ProcessQueries

WINDOW_S = 3600.0  # the last hour
DURATION_SAMPLE = 1000  # the newest completions whose durations make the percentiles
STUCK_AFTER_S = 60.0  # a waiting process whose due time passed this long ago, unfired, is stuck
STUCK_LIMIT = 10_000  # counted at most


async def read_statistics(store: ProcessQueries, now: float, *, stuck_after_s: float = STUCK_AFTER_S) -> dict[str, Any]:
    since = now - WINDOW_S
    result = case_statistics(
        now=now,
        finished=await store.finished_per_minute(since),
        durations=await store.recent_durations(since, DURATION_SAMPLE),
        failures=await store.failures_by_stage(since),
        stuck=await store.overdue_by_case(now - stuck_after_s, STUCK_LIMIT),
    )
    return {**result, "stuck_after_s": stuck_after_s}


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def case_statistics(
    *, now: float, finished: list[tuple[str, str, int, int]], durations: list[tuple[str, float]],
    failures: list[tuple[str, str, int]], stuck: list[tuple[str, int]],
) -> dict[str, Any]:
    """One entry per case seen in any answer: ``completed``, ``failed``, ``cancelled`` (last hour),
    ``throughput_per_minute`` (processes finished in each of the last 60 minutes, oldest first),
    ``duration_s`` (p50/p95/p99 from creation to completion, over ``sample`` newest completions),
    ``failures_by_stage`` and ``stuck``."""
    last_minute = int(now // 60)
    first_minute = last_minute - int(WINDOW_S // 60) + 1
    cases: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "completed": 0, "failed": 0, "cancelled": 0, "throughput_per_minute": [0] * int(WINDOW_S // 60),
        "duration_s": None, "failures_by_stage": {}, "stuck": 0,
    })
    for case, status, minute, n in finished:
        entry = cases[case]
        entry[status] = entry.get(status, 0) + n
        if first_minute <= minute <= last_minute:
            entry["throughput_per_minute"][minute - first_minute] += n
    by_case: dict[str, list[float]] = defaultdict(list)
    for case, seconds in durations:
        by_case[case].append(seconds)
    for case, values in by_case.items():
        ordered = sorted(values)
        cases[case]["duration_s"] = {"p50": round(percentile(ordered, 50), 3), "p95": round(percentile(ordered, 95), 3),
                                     "p99": round(percentile(ordered, 99), 3), "sample": len(ordered)}
    for case, stage, n in failures:
        cases[case]["failures_by_stage"][stage] = n
    for case, n in stuck:
        cases[case]["stuck"] = n
    return {"window_s": WINDOW_S, "cases": dict(sorted(cases.items()))}


def table(statistics: dict[str, Any]) -> list[str]:
    """The statistics as lines of a fixed-width table (``stageflow stats``)."""
    lines = [f"{'case':<20} {'done/h':>7} {'failed/h':>8} {'per min':>8} {'p50 s':>8} {'p95 s':>8} {'p99 s':>8}"
             f" {'stuck':>6}  failures by stage"]
    for case, s in statistics["cases"].items():
        d = s["duration_s"] or {}
        per_minute = sum(s["throughput_per_minute"][-5:]) / 5  # the last five minutes' pace
        failed = ", ".join(f"{stage}={n}" for stage, n in sorted(s["failures_by_stage"].items())) or "-"
        lines.append(f"{case:<20} {s['completed']:>7} {s['failed']:>8} {per_minute:>8.1f} {_num(d.get('p50'))}"
                     f" {_num(d.get('p95'))} {_num(d.get('p99'))} {s['stuck']:>6}  {failed}")
    return lines


def _num(value: float | None) -> str:
    return f"{value:>8.2f}" if value is not None else f"{'-':>8}"
