"""The store contract as tests, continued: ``ProcessQueries`` (lists, counts, stats) over a fixed set of
processes, every ``ProcessFilter`` field, ``status=retrying`` and keyset pages."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from framework.document import Status
from framework.state import Failure
from framework.store.protocols import ProcessStore
from framework.store.records import RETRYING, ProcessFilter
from tests.store_contract import (
    RESEND_WAIT,
    RETRY_WAIT,
    SERVICE_WAIT,
    T0,
    TIMER_WAIT,
    commit,
    doc_of,
    entry_of,
    next_of,
    summary_of,
)

ERROR = Failure(stage="charge", reason="boom", at=T0 + 9, version=3, attempts=2)
# process id -> (case, created_at offset, the document's changes)
PROCESSES: dict[str, tuple[str, float, dict[str, Any]]] = {
    "a1": ("order", 1, {"status": Status.COMPLETED, "ended_at": T0 + 10, "stage": "done", "result": {"ok": 1}}),
    "a2": ("order", 2, {"status": Status.FAILED, "ended_at": T0 + 9, "error": ERROR}),
    "a3": ("order", 3, {"status": Status.WAITING, "waiting": RETRY_WAIT, "attempts": 1}),
    "a4": ("refund", 4, {"status": Status.WAITING, "waiting": RESEND_WAIT}),
    "a5": ("refund", 5, {"status": Status.WAITING, "waiting": SERVICE_WAIT}),
    "a6": ("refund", 6, {"status": Status.FAILED, "error": dataclasses.replace(ERROR, stage="ship")}),
    "a7": ("order", 6, {}),  # running; created with a6: the id breaks the tie
    "a8": ("order", 7, {"status": Status.WAITING, "waiting": TIMER_WAIT}),
}
NEWEST_FIRST = ["a8", "a7", "a6", "a5", "a4", "a3", "a2", "a1"]
FILTERS: list[tuple[ProcessFilter, set[str]]] = [
    (ProcessFilter(), set(PROCESSES)),
    (ProcessFilter(case="order"), {"a1", "a2", "a3", "a7", "a8"}),
    (ProcessFilter(status="failed"), {"a2", "a6"}),
    (ProcessFilter(status="waiting"), {"a3", "a4", "a5", "a8"}),
    (ProcessFilter(status=RETRYING), {"a3", "a4"}),
    (ProcessFilter(case="refund", status=RETRYING), {"a4"}),
    (ProcessFilter(failed_stage="charge"), {"a2"}),
    (ProcessFilter(status="failed", failed_stage="ship"), {"a6"}),
    (ProcessFilter(created_after=T0 + 3), {"a3", "a4", "a5", "a6", "a7", "a8"}),  # inclusive
    (ProcessFilter(created_before=T0 + 3), {"a1", "a2"}),  # exclusive
    (ProcessFilter(case="refund", created_after=T0 + 5, created_before=T0 + 7), {"a5", "a6"}),
    (ProcessFilter(case="nope"), set()),
]


@pytest.fixture
async def filled(store: ProcessStore) -> ProcessStore:
    for n, (pid, (case, offset, changes)) in enumerate(PROCESSES.items(), start=1):
        doc = doc_of(pid, case=case, created_at=T0 + offset, **changes)
        entry = {"version": 1, "event": "start", "stage": "s1", "duration_ms": float(n)}
        assert (await store.create(doc, entry, due_at=None))[1]
    return store


@pytest.mark.parametrize(("where", "expected"), FILTERS, ids=[repr(f) for f, _ in FILTERS])
async def test_every_filter_in_find_ids_list_page_and_count_matching(
    filled: ProcessStore, where: ProcessFilter, expected: set[str]
) -> None:
    assert await filled.find_ids(where) == sorted(expected)
    items, _ = await filled.list_page(where, limit=100)
    assert [i["process_id"] for i in items] == [p for p in NEWEST_FIRST if p in expected]
    assert await filled.count_matching(where, timeout_s=5) == len(expected)


async def test_find_ids_pages_by_id(filled: ProcessStore) -> None:
    assert await filled.find_ids(ProcessFilter(), after="a3", limit=2) == ["a4", "a5"]
    assert await filled.find_ids(ProcessFilter(case="order"), after="a3", limit=10) == ["a7", "a8"]
    assert await filled.find_ids(ProcessFilter(), after="a8") == []


@pytest.mark.parametrize("where", [ProcessFilter(), ProcessFilter(case="order"), ProcessFilter(status="waiting")])
async def test_list_pages_walk_the_whole_list_newest_first(filled: ProcessStore, where: ProcessFilter) -> None:
    seen: list[str] = []
    after = None
    for _ in range(10):
        items, key = await filled.list_page(where, after=after, limit=3)
        if not items:
            assert key is None
            break
        assert key == (items[-1]["created_at"], items[-1]["process_id"])
        seen += [i["process_id"] for i in items]
        after = key
    assert seen == [p for p in NEWEST_FIRST if p in await filled.find_ids(where)]


async def test_a_list_row_is_a_summary_of_the_document(filled: ProcessStore) -> None:
    items, _ = await filled.list_page(ProcessFilter(), limit=100)
    rows = {i["process_id"]: i for i in items}
    assert rows["a1"] == {
        "process_id": "a1", "case": "order", "case_version": 1, "status": "completed", "stage": "done",
        "client_key": None, "created_at": T0 + 1, "updated_at": T0 + 1, "ended_at": T0 + 10, "waiting": None,
        "error": None,
    }
    assert rows["a2"]["error"] == {"stage": "charge", "reason": "boom", "at": T0 + 9}  # not its attempts, version
    assert rows["a3"]["waiting"] == summary_of(RETRY_WAIT) == {
        "kind": "timer", "reason": "retry", "stage": "s1", "until": T0 + 60, "attempt": 2}
    assert rows["a4"]["waiting"] == summary_of(RESEND_WAIT)
    assert rows["a5"]["waiting"] == summary_of(SERVICE_WAIT) == {"kind": "service", "api": "billing",
                                                                 "deadline": T0 + 600, "attempt": 1}
    assert rows["a7"]["waiting"] is None and rows["a7"]["ended_at"] is None and rows["a7"]["stage"] == "s1"


async def test_a_commit_keeps_the_retrying_flag_and_the_waiting_summary_current(filled: ProcessStore) -> None:
    retrying = await filled.load("a3")
    assert retrying is not None
    running = next_of(retrying, status=Status.RUNNING, waiting=None)
    await commit(filled, running)
    assert await filled.find_ids(ProcessFilter(status=RETRYING)) == ["a4"]
    items, _ = await filled.list_page(ProcessFilter(case="order", status="running"))
    assert [(i["process_id"], i["waiting"]) for i in items] == [("a7", None), ("a3", None)]

    again = next_of(running, status=Status.WAITING, waiting=dataclasses.replace(RETRY_WAIT, attempt=3))
    await commit(filled, again)
    items, _ = await filled.list_page(ProcessFilter(status=RETRYING))
    assert [(i["process_id"], i["waiting"]["attempt"]) for i in items] == [("a4", 1), ("a3", 3)]


async def test_counts_and_stage_durations(filled: ProcessStore) -> None:
    assert await filled.count_by_status() == {"completed": 1, "failed": 2, "waiting": 4, "running": 1}
    assert await filled.count_by_status("refund") == {"waiting": 2, "failed": 1}
    assert sorted(await filled.count_by_case_and_status()) == [
        ("order", "completed", 1), ("order", "failed", 1), ("order", "running", 1), ("order", "waiting", 2),
        ("refund", "failed", 1), ("refund", "waiting", 2)]
    # the history of the two newest processes (a8 and a7) only
    assert sorted(await filled.recent_stage_durations(2)) == [("order", "s1", 7.0), ("order", "s1", 8.0)]
    assert len(await filled.recent_stage_durations(100)) == len(PROCESSES)


async def test_search_attributes_filter_lists_ids_and_counts(store: ProcessStore) -> None:
    tagged = {
        "a": {"customer_id": "C-1", "order_total": 12.5, "vip": True, "items": 3},
        "b": {"customer_id": "C-1", "order_total": 99.0, "vip": False, "items": 1},
        "c": {"customer_id": "C-2", "order_total": 12.5, "vip": False, "items": 3},
    }
    for pid, search in tagged.items():
        await store.create(doc_of(pid, search=search), entry_of(1), due_at=None)
    await store.create(doc_of("untagged"), entry_of(1), due_at=None)
    queries = {
        (("customer_id", "C-1"),): ["a", "b"],
        (("customer_id", "C-1"), ("vip", True)): ["a"],
        (("order_total", 12.5),): ["a", "c"],
        (("items", 3), ("customer_id", "C-2")): ["c"],
        (("customer_id", "nobody"),): [],
    }
    for search, expected in queries.items():
        where = ProcessFilter(case="order", search=search)
        assert await store.find_ids(where) == expected, search
        rows, _ = await store.list_page(where)
        assert sorted(r["process_id"] for r in rows) == expected, search
        assert await store.count_matching(where, timeout_s=5) == len(expected), search
    assert (await store.load("a")).search == tagged["a"]  # type: ignore[union-attr]
