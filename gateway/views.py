"""What the gateway returns: a process view, list cursors, stats. Pure functions of stored data."""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson

from framework.case import BusinessCase
from framework.document import ProcessDocument, Status
from framework.errors import InvalidInputError
from framework.fanout import ItemRow, child_process_id
from framework.store.base import PageKey

STATS_SAMPLE = 1000  # stage durations come from the history of this many newest processes
_HIDDEN_WAITING = ("command", "task_id")  # the raw command and its taskId are a capability, not status


def process_view(case: type[BusinessCase], doc: ProcessDocument, history: list[dict[str, Any]],
                 now: float) -> dict[str, Any]:
    view = doc.public_view()
    if doc.status == Status.COMPLETED:
        done = len(case.stages)
    else:
        spec = case.stage_named(doc.stage) if doc.stage else None
        done = spec.index if spec else 0
    view["progress"] = {"stages_done": done, "stages_total": len(case.stages)}
    if view["waiting"] is not None:
        view["waiting"] = {k: v for k, v in view["waiting"].items() if k not in _HIDDEN_WAITING}
    end = doc.ended_at if doc.ended_at is not None else now
    view["timings"] = {
        "created_at": doc.created_at, "updated_at": doc.updated_at, "ended_at": doc.ended_at,
        "duration_s": round(end - doc.created_at, 3),
    }
    view["history"] = history
    return view


def item_view(process_id: str, group: int, row: ItemRow) -> dict[str, Any]:
    """One fan-out item: what it runs, where it is, and its result or error."""
    view: dict[str, Any] = {"index": row.index, "status": row.status, "updated_at": row.updated_at}
    if "api" in row.spec:
        view["api"] = row.spec["api"]
    else:
        view["case"] = row.spec["case"]
        view["child_process_id"] = child_process_id(process_id, group, row.index)
    if row.status == "done":
        view["result"] = row.result
    elif row.status == "failed":
        view["error"] = row.error
    return view


def epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def encode_cursor(key: PageKey) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    try:
        created_at, process_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(created_at, int | float) or not isinstance(process_id, str):
            raise ValueError
        return float(created_at), process_id
    except (ValueError, TypeError, orjson.JSONDecodeError):
        message = "not a cursor this API returned"
        errors = [{"field": "cursor", "message": message}]
        raise InvalidInputError(f"invalid cursor: {message}", errors=errors) from None


def _percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def stats(counts: list[tuple[str, str, int]], durations: list[tuple[str, str, float]], sample: int) -> dict[str, Any]:
    by_case: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case, status, n in counts:
        by_case[case][status] += n

    def summary(statuses: dict[str, int]) -> dict[str, Any]:
        finished = sum(statuses.get(s.value, 0) for s in Status if s.finished)
        return {
            "total": sum(statuses.values()),
            "by_status": dict(statuses),
            "success_rate": round(statuses.get("completed", 0) / finished, 4) if finished else None,
        }

    overall: dict[str, int] = defaultdict(int)
    for statuses in by_case.values():
        for status, n in statuses.items():
            overall[status] += n
    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for case, stage, ms in durations:
        runs[case][stage].append(ms)
    stage_ms = {
        case: {
            stage: {"runs": len(v), "p50_ms": _percentile(v, 50), "p95_ms": _percentile(v, 95)}
            for stage, values in stages.items()
            for v in [sorted(values)]
        }
        for case, stages in runs.items()
    }
    return {
        **summary(overall),
        "cases": {case: summary(statuses) for case, statuses in sorted(by_case.items())},
        "stage_durations": {"sample_processes": sample, "by_case": stage_ms},
    }
