"""The store contract as tests: every promise of ``framework.store.protocols``, for any backend.

``tests/test_store_contract.py`` runs these against each backend through its ``store`` fixture (an opened,
empty store of its own). A new backend adds itself there and is done when all of these pass. Times are
made-up epoch seconds, so nothing here depends on the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

import orjson
import pytest

from framework.document import OutboxMessage, ProcessDocument, Status
from framework.errors import StoreError
from framework.fanout import SUCCEEDED, NewFanOut
from framework.state import Event, EventWait, FanOutWait, ResendWait, RetryWait, ServiceWait, TimerWait, Wait
from framework.store.protocols import PROTOCOLS, ProcessStore
from framework.store.records import Job, ProcessFilter

T0 = 1_000_000.0
RETRY_WAIT = RetryWait(stage="s1", until=T0 + 60, attempt=2, error="boom")
RESEND_WAIT = ResendWait(api="billing", task_id="t", resume="s2", from_stage="s1", since=T0, attempt=1,
                         until=T0 + 30, error="boom", command="{}")
SERVICE_WAIT = ServiceWait(api="billing", task_id="t", resume="s2", from_stage="s1", since=T0, deadline=T0 + 600)
TIMER_WAIT = TimerWait(reason="wait", stage="s2", until=T0 + 5)


def summary_of(wait: Wait) -> dict[str, Any]:
    """What a list row shows of ``wait``: a few of its fields, never the command or the taskId."""
    shown = {"kind", "reason", "stage", "api", "name", "until", "deadline", "attempt"}
    return {k: v for k, v in orjson.loads(orjson.dumps(wait)).items() if k in shown and v is not None}


def doc_of(
    process_id: str, *, case: str = "order", client_key: str | None = None, created_at: float = T0, **changes: Any
) -> ProcessDocument:
    """A new process's document (version 1) with ``changes``."""
    doc = ProcessDocument(process_id=process_id, case=case, case_version=1, status=Status.RUNNING, input={"n": 1},
                          stage="s1", version=1, created_at=created_at, updated_at=created_at, client_key=client_key)
    return dataclasses.replace(doc, **changes)


def entry_of(version: int, **extra: Any) -> dict[str, Any]:
    return {"version": version, "event": "next", "at": T0 + version, **extra}


def next_of(doc: ProcessDocument, **changes: Any) -> ProcessDocument:
    """``doc`` one transition later."""
    return dataclasses.replace(doc, version=doc.version + 1, updated_at=doc.updated_at + 1, **changes)


async def commit(store: ProcessStore, doc: ProcessDocument, *, due_at: float | None = None,
                 expires_at: float | None = None, **extra: Any) -> None:
    ok = await store.commit(doc, entry_of(doc.version, **extra), expected_version=doc.version - 1, due_at=due_at,
                            expires_at=expires_at)
    assert ok, f"commit of {doc.process_id} v{doc.version} refused"


# -- the shape of the contract ----------------------------------------------------------------------------

async def test_backend_implements_every_method_of_every_protocol(store: ProcessStore) -> None:
    for protocol in PROTOCOLS:
        assert isinstance(store, protocol), protocol.__name__
        names = [n for n, v in vars(protocol).items() if inspect.iscoroutinefunction(v) and not n.startswith("_")]
        assert 0 < len(names) <= 12, f"{protocol.__name__} is not a narrow protocol: {names}"
        for name in names:  # the protocol's own body is a docstring: a backend must define each method itself
            assert getattr(type(store), name) is not vars(protocol)[name], f"{type(store).__name__}.{name} missing"


# -- documents ----------------------------------------------------------------------------------------------

async def test_create_load_and_client_key_dedupe(store: ProcessStore) -> None:
    doc = doc_of("p1", client_key="order-1", store={"é": [1, 2.5, None]})
    assert await store.create(doc, entry_of(1), due_at=None) == (doc, True)
    assert await store.load("p1") == doc
    assert await store.history("p1") == [entry_of(1)]

    twin = doc_of("p2", client_key="order-1", input={"n": 2})  # same case and key: the first one, nothing written
    assert await store.create(twin, entry_of(1), due_at=None) == (doc, False)
    assert await store.load("p2") is None and await store.history("p2") == []

    other_case = doc_of("p3", case="refund", client_key="order-1")  # a key is per case
    assert await store.create(other_case, entry_of(1), due_at=None) == (other_case, True)
    no_key = [doc_of(f"n{i}") for i in range(3)]  # no key: never deduplicated
    assert [created for _, created in await asyncio.gather(
        *(store.create(d, entry_of(1), due_at=None) for d in no_key))] == [True] * 3


async def test_create_of_a_taken_process_id_without_a_key_is_an_error(store: ProcessStore) -> None:
    await store.create(doc_of("p1"), entry_of(1), due_at=None)
    with pytest.raises(StoreError):
        await store.create(doc_of("p1", input={"other": True}), entry_of(1), due_at=None)
    assert (await store.load("p1")).input == {"n": 1}  # type: ignore[union-attr]


async def test_concurrent_creates_with_one_key_make_one_process(store: ProcessStore) -> None:
    results = await asyncio.gather(*(
        store.create(doc_of(f"p{i}", client_key="same"), entry_of(1), due_at=None) for i in range(6)))
    assert sum(created for _, created in results) == 1
    assert len({d.process_id for d, _ in results}) == 1


async def test_load_by_key_finds_the_process_of_a_case_and_key_with_its_events(store: ProcessStore) -> None:
    waiting = EventWait(name="paid", resume="s2", from_stage="s1", since=T0, deadline=T0 + 60, timeout_s=60.0)
    events = [Event(name="paid", id="e1", data={"é": 1}, at=T0, consumed=None)]
    doc = doc_of("p1", client_key="order-1", status=Status.WAITING, waiting=waiting, events=events)
    await store.create(doc, entry_of(1), due_at=T0 + 60)
    assert await store.load_by_key("order", "order-1") == doc
    assert await store.load_by_key("refund", "order-1") is None  # a key is per case
    assert await store.load_by_key("order", "order-2") is None
    rows, _ = await store.list_page(ProcessFilter(case="order"))
    assert rows[0]["waiting"] == summary_of(waiting)


async def test_unknown_process_loads_as_none(store: ProcessStore) -> None:
    assert await store.load("nope") is None
    assert await store.load_with_history("nope") is None
    assert await store.history("nope") == []


async def test_commit_is_compare_and_set_and_a_stale_one_writes_nothing(store: ProcessStore) -> None:
    doc = doc_of("p1")
    await store.create(doc, entry_of(1), due_at=None)
    v2 = next_of(doc, stage="s2", outbox=[OutboxMessage("inner", "p1/2", '{"x":1}')])
    await commit(store, v2)
    stale = next_of(doc, stage="elsewhere")  # also v2, from an old copy at v1
    assert not await store.commit(stale, entry_of(2, stale=True), expected_version=1, due_at=None, expires_at=None)
    assert await store.load("p1") == v2
    assert await store.history("p1") == [entry_of(1), entry_of(2)]
    assert not await store.commit(next_of(v2), entry_of(3), expected_version=7, due_at=None, expires_at=None)
    assert not await store.commit(doc_of("ghost", version=2), entry_of(2), expected_version=1, due_at=None,
                                  expires_at=None)


async def test_concurrent_commits_of_one_version_one_wins(store: ProcessStore) -> None:
    doc = doc_of("p1")
    await store.create(doc, entry_of(1), due_at=None)
    rivals = [next_of(doc, stage=f"s{i}") for i in range(5)]
    results = await asyncio.gather(*(
        store.commit(r, entry_of(2, rival=i), expected_version=1, due_at=None, expires_at=None)
        for i, r in enumerate(rivals)))
    assert sorted(results) == [False] * 4 + [True]
    winner = results.index(True)
    assert await store.load("p1") == rivals[winner]
    assert await store.history("p1") == [entry_of(1), entry_of(2, rival=winner)]


async def test_history_is_in_version_order_and_load_with_history_is_both(store: ProcessStore) -> None:
    doc = doc_of("p1")
    await store.create(doc, entry_of(1), due_at=None)
    for _ in range(11):  # versions 2..12: an order a text sort would get wrong
        doc = next_of(doc)
        await commit(store, doc, detail={"tries": [1, 2.5, None, "é ✓"], "ok": True})
    history = await store.history("p1")
    assert [e["version"] for e in history] == list(range(1, 13))
    assert await store.load_with_history("p1") == (doc, history)


async def test_due_and_claim_due_one_of_two_claimers_wins(store: ProcessStore) -> None:
    for i, due_at in enumerate([T0 + 30, T0 + 10, T0 + 20, T0 + 99]):
        await store.create(doc_of(f"p{i}"), entry_of(1), due_at=due_at)
    await store.create(doc_of("never"), entry_of(1), due_at=None)
    assert [d.process_id for d in await store.due(T0 + 30, 10)] == ["p1", "p2", "p0"]  # earliest first
    assert [d.process_id for d in await store.due(T0 + 30, 2)] == ["p1", "p2"]

    claims = await asyncio.gather(*(store.claim_due("p1", 1, T0 + 30, T0 + 500) for _ in range(2)))
    assert sorted(claims) == [False, True]
    assert [d.process_id for d in await store.due(T0 + 30, 10)] == ["p2", "p0"]
    assert [d.process_id for d in await store.due(T0 + 500, 10)][-1] == "p1"
    assert not await store.claim_due("p2", 2, T0 + 30, None)  # not at that version
    assert not await store.claim_due("p3", 1, T0 + 30, None)  # not due yet
    assert await store.claim_due("p2", 1, T0 + 30, None)  # None: not due any more
    assert "p2" not in [d.process_id for d in await store.due(T0 + 10_000, 10)]


async def test_commit_moves_due_at(store: ProcessStore) -> None:
    doc = doc_of("p1")
    await store.create(doc, entry_of(1), due_at=T0)
    await commit(store, next_of(doc), due_at=T0 + 100)
    assert await store.due(T0 + 99, 10) == []
    assert [d.version for d in await store.due(T0 + 100, 10)] == [2]


async def test_delete_expired_deletes_finished_processes_with_their_history_and_fan_outs(
    store: ProcessStore,
) -> None:
    for pid in ("gone1", "gone2", "kept"):
        doc = doc_of(pid)
        await store.create(doc, entry_of(1), due_at=None)
        await store.commit_fan_out(next_of(doc), entry_of(2), expected_version=1, due_at=None,
                                   fan_out=NewFanOut(2, ['{"i":0}'], window=1, tolerate=0, first=False))
        done = next_of(next_of(doc), status=Status.COMPLETED, ended_at=T0 + 3)
        await commit(store, done, expires_at=T0 + 100 if pid.startswith("gone") else T0 + 10_000)
    await store.create(doc_of("running"), entry_of(1), due_at=None)

    assert await store.delete_expired(T0 + 100, limit=1) == 1
    assert await store.delete_expired(T0 + 100, limit=10) == 1
    assert await store.delete_expired(T0 + 100, limit=10) == 0
    for pid in ("gone1", "gone2"):
        assert await store.load(pid) is None and await store.history(pid) == []
        assert await store.fan_out_state(pid, 2) is None and await store.fan_out_items(pid, 2) == []
    assert await store.load("kept") is not None and len(await store.history("kept")) == 3
    assert await store.fan_out_state("kept", 2) is not None
    assert await store.load("running") is not None


# -- fan-outs -----------------------------------------------------------------------------------------------

async def _fanned_out(store: ProcessStore, *, items: int = 3, window: int = 2, tolerate: int = 0,
                      first: bool = False) -> ProcessDocument:
    doc = doc_of("parent")
    await store.create(doc, entry_of(1), due_at=None)
    fanning_out = FanOutWait(group=2, resume="join", from_stage="s1", total=3, since=T0)
    waiting = next_of(doc, status=Status.WAITING, waiting=fanning_out)
    specs = [orjson.dumps({"item": i}).decode() for i in range(items)]
    assert await store.commit_fan_out(waiting, entry_of(2), expected_version=1, due_at=None,
                                      fan_out=NewFanOut(2, specs, window=window, tolerate=tolerate, first=first))
    return waiting


async def test_commit_fan_out_writes_the_document_counters_and_items_atomically(store: ProcessStore) -> None:
    parent = await _fanned_out(store)
    assert await store.load("parent") == parent
    assert await store.history("parent") == [entry_of(1), entry_of(2)]
    state = await store.fan_out_state("parent", 2)
    assert state is not None and (state.total, state.window, state.next_index, state.done, state.decided) == (
        3, 2, 2, 0, None)
    items = await store.fan_out_items("parent", 2)
    assert [(i.index, i.status, i.spec) for i in items] == [
        (0, "dispatched", {"item": 0}), (1, "dispatched", {"item": 1}), (2, "pending", {"item": 2})]
    assert all(i.updated_at == parent.updated_at and i.result is None for i in items)
    # a stale fan-out transition writes nothing: no document, no counter row, no items
    assert not await store.commit_fan_out(next_of(doc_of("parent")), entry_of(2), expected_version=1, due_at=None,
                                          fan_out=NewFanOut(5, ['{}'], window=1, tolerate=0, first=False))
    assert await store.fan_out_state("parent", 5) is None and await store.fan_out_items("parent", 5) == []
    assert await store.load("parent") == parent


async def test_complete_item_releases_the_next_decides_once_and_a_duplicate_changes_nothing(
    store: ProcessStore,
) -> None:
    await _fanned_out(store)
    first = await store.complete_item("parent", 2, 0, ok=True, result={"r": 0}, error=None, now=T0 + 10)
    assert first is not None and first.applied and not first.newly_decided
    assert first.release is not None and (first.release.index, first.release.status) == (2, "dispatched")
    assert (first.state.done, first.state.next_index) == (1, 3)

    again = await store.complete_item("parent", 2, 0, ok=False, result=None, error="late", now=T0 + 11)
    assert again is not None and not again.applied and not again.newly_decided
    assert again.state == first.state  # nothing changed ...
    assert again.release is not None and again.release.index == 2  # ... and what it released is handed back
    item0 = (await store.fan_out_items("parent", 2, limit=1))[0]
    assert (item0.status, item0.result, item0.error, item0.updated_at) == ("done", {"r": 0}, None, T0 + 10)

    failed = await store.complete_item("parent", 2, 1, ok=False, result=None, error="boom", now=T0 + 12)
    assert failed is not None and failed.applied and failed.release is None
    assert failed.state.decided == "failed" and failed.newly_decided  # tolerate=0: one failure decides
    last = await store.complete_item("parent", 2, 2, ok=True, result=[1], error=None, now=T0 + 13)
    assert last is not None and last.applied and not last.newly_decided and last.state.decided == "failed"
    assert await store.complete_item("parent", 2, 9, ok=True, result=None, error=None, now=T0) is None
    assert await store.complete_item("parent", 7, 0, ok=True, result=None, error=None, now=T0) is None
    assert await store.complete_item("nobody", 2, 0, ok=True, result=None, error=None, now=T0) is None


async def test_concurrent_completions_of_one_item_apply_once(store: ProcessStore) -> None:
    await _fanned_out(store, items=2, window=2)
    results = await asyncio.gather(*(
        store.complete_item("parent", 2, 0, ok=True, result=i, error=None, now=T0 + i) for i in range(4)))
    assert sum(r is not None and r.applied for r in results) == 1
    done = await store.complete_item("parent", 2, 1, ok=True, result=None, error=None, now=T0 + 9)
    assert done is not None and done.newly_decided and done.state.decided == SUCCEEDED
    assert (done.state.done, done.state.failed) == (2, 0)


async def test_cancel_items_cancels_pending_and_dispatched_items_and_names_the_dispatched(
    store: ProcessStore,
) -> None:
    await _fanned_out(store, items=5, window=3)
    await store.complete_item("parent", 2, 1, ok=True, result=None, error=None, now=T0 + 50)
    was_dispatched = await store.cancel_items("parent", 2, now=T0 + 60)
    assert [i.index for i in was_dispatched] == [0, 2, 3]
    assert [(i.index, i.status) for i in await store.fan_out_items("parent", 2)] == [
        (0, "cancelled"), (1, "done"), (2, "cancelled"), (3, "cancelled"), (4, "cancelled")]
    late = await store.complete_item("parent", 2, 0, ok=True, result=None, error=None, now=T0 + 70)
    assert late is not None and not late.applied and late.release is None  # a cancelled item stays cancelled
    assert await store.cancel_items("parent", 2, now=T0 + 80) == []
    assert await store.cancel_items("nobody", 2, now=T0) == []


async def test_cancel_items_updates_the_counter_row_in_the_same_transaction(store: ProcessStore) -> None:
    await _fanned_out(store, items=5, window=3)
    await store.complete_item("parent", 2, 1, ok=True, result=None, error=None, now=T0 + 50)
    await store.complete_item("parent", 2, 0, ok=False, result=None, error="boom", now=T0 + 51)
    before = await store.fan_out_state("parent", 2)
    assert before is not None and before.counts()["in_flight"] > 0  # tolerate=0: decided failed, items still run
    await store.cancel_items("parent", 2, now=T0 + 60)
    state = await store.fan_out_state("parent", 2)
    assert state is not None and (state.decided, state.done, state.failed) == ("cancelled", 1, 1)
    assert state.counts() == {"group": 2, "total": 5, "succeeded": 1, "failed": 1, "in_flight": 0, "pending": 0,
                              "cancelled": 3, "decided": "cancelled"}
    assert sum(i.status == "cancelled" for i in await store.fan_out_items("parent", 2)) == 3
    # a late completion of a cancelled item changes neither the item nor the counters
    late = await store.complete_item("parent", 2, 2, ok=True, result=None, error=None, now=T0 + 70)
    assert late is not None and not late.applied and await store.fan_out_state("parent", 2) == state


async def test_cancel_items_of_a_fan_out_whose_items_all_ended_keeps_its_decision(store: ProcessStore) -> None:
    await _fanned_out(store, items=2, window=2)
    for index in (0, 1):
        await store.complete_item("parent", 2, index, ok=True, result=None, error=None, now=T0 + 10 + index)
    assert await store.cancel_items("parent", 2, now=T0 + 60) == []
    state = await store.fan_out_state("parent", 2)
    assert state is not None and state.decided == SUCCEEDED and state.counts()["cancelled"] == 0


async def test_fan_out_items_filters(store: ProcessStore) -> None:
    await _fanned_out(store, items=5, window=3)
    await store.complete_item("parent", 2, 1, ok=True, result=None, error=None, now=T0 + 50)
    assert [i.index for i in await store.fan_out_items("parent", 2, status="dispatched")] == [0, 2, 3]
    assert [i.index for i in await store.fan_out_items("parent", 2, after=1, limit=2)] == [2, 3]
    assert [i.index for i in await store.fan_out_items("parent", 2, status="pending")] == [4]
    stale = await store.fan_out_items("parent", 2, status="dispatched", updated_before=T0 + 50)
    assert [i.index for i in stale] == [0, 2]  # item 3 was dispatched at T0 + 50 by the completion
    assert await store.fan_out_items("parent", 3) == []


# -- schedules ----------------------------------------------------------------------------------------------

async def test_sync_due_advance_pause(store: ProcessStore) -> None:
    await store.sync_schedule("a", '{"v":1}', '{"every_s":60}', 120.0, now=100.0)
    await store.sync_schedule("b", '{"v":1}', '{"every_s":60}', 120.0, now=100.0)
    assert [r.name for r in await store.due_schedules(["a", "b"], 119.0)] == []
    assert [r.name for r in await store.due_schedules(["a"], 120.0)] == ["a"]  # only the names asked for
    assert await store.due_schedules([], 1000.0) == []

    # a new definition with the same timing keeps next_fire_at; a new timing resets it; the pause stays
    assert await store.advance_schedule("a", expected_next_fire_at=120.0, next_fire_at=180.0, last_tick=120.0,
                                        fired_at=121.0)
    assert await store.set_schedule_paused("a", True, now=122.0)
    await store.sync_schedule("a", '{"v":2}', '{"every_s":60}', 999.0, now=130.0)
    row = {r.name: r for r in await store.schedules()}["a"]
    assert (row.definition, row.next_fire_at, row.paused, row.last_tick) == ('{"v":2}', 180.0, True, 120.0)
    assert (row.last_fired_at, row.updated_at) == (121.0, 130.0)
    await store.sync_schedule("a", '{"v":3}', '{"every_s":30}', 150.0, now=131.0)
    row = {r.name: r for r in await store.schedules()}["a"]
    assert (row.timing, row.next_fire_at, row.paused) == ('{"every_s":30}', 150.0, True)
    assert await store.due_schedules(["a"], 1000.0) == []  # paused
    assert await store.set_schedule_paused("a", False, now=200.0, next_fire_at=210.0)
    assert [r.next_fire_at for r in await store.due_schedules(["a"], 1000.0)] == [210.0]
    assert not await store.set_schedule_paused("nope", True, now=200.0)
    assert [r.name for r in await store.schedules()] == ["a", "b"]
    assert not await store.advance_schedule("a", expected_next_fire_at=120.0, next_fire_at=1.0, last_tick=1.0,
                                            fired_at=1.0)  # stale


async def test_one_of_many_racing_advances_wins(store: ProcessStore) -> None:
    await store.sync_schedule("a", "{}", '{"every_s":1}', 10.0, now=9.0)
    results = await asyncio.gather(*(
        store.advance_schedule("a", expected_next_fire_at=10.0, next_fire_at=11.0, last_tick=10.0, fired_at=10.5)
        for _ in range(8)
    ))
    assert sorted(results) == [False] * 7 + [True]


# -- jobs ---------------------------------------------------------------------------------------------------

def job_of(job_id: str, *, owner: str = "gw-1", created_at: float = T0, **changes: Any) -> Job:
    fields: dict[str, Any] = {"updated_at": created_at, **changes}
    return Job(job_id=job_id, kind="reprocess", params={"case": "order"}, owner=owner, created_at=created_at,
               **fields)


async def test_jobs_create_load_list_and_save_by_their_owner_only(store: ProcessStore) -> None:
    for i in range(3):
        await store.create_job(job_of(f"j{i}", created_at=T0 + i))
    assert await store.load_job("j1") == job_of("j1", created_at=T0 + 1)
    assert await store.load_job("nope") is None
    assert [j.job_id for j in await store.list_jobs(limit=2)] == ["j2", "j1"]  # newest first

    progress = job_of("j0", done=5, cursor="p5", updated_at=T0 + 20, errors=[{"process_id": "p3", "reason": "x"}])
    assert await store.save_job(progress)
    assert await store.load_job("j0") == progress
    assert not await store.save_job(dataclasses.replace(progress, owner="gw-2", done=99))
    assert (await store.load_job("j0")).done == 5  # type: ignore[union-attr]


async def test_claim_job_one_claimer_wins_and_stale_jobs_are_interrupted(store: ProcessStore) -> None:
    await store.create_job(job_of("old", updated_at=T0 + 1))
    await store.create_job(job_of("fresh", updated_at=T0 + 100))
    assert await store.interrupt_stale_jobs(stale_before=T0 + 50, now=T0 + 120) == 1
    old = await store.load_job("old")
    assert old is not None and (old.status, old.ended_at, old.error) == (
        "interrupted", T0 + 120, "its gateway stopped while it ran")
    assert (await store.load_job("fresh")).status == "running"  # type: ignore[union-attr]

    assert await store.claim_job("fresh", owner="gw-2", now=T0, from_statuses=("interrupted",)) is None
    claims = await asyncio.gather(*(
        store.claim_job("old", owner=f"gw-{i}", now=T0 + 130, from_statuses=("interrupted", "failed"))
        for i in range(2, 5)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    job = won[0]
    assert (job.status, job.updated_at, job.error, job.ended_at) == ("running", T0 + 130, None, None)
    assert await store.load_job("old") == job
    assert await store.save_job(dataclasses.replace(job, done=1))  # the winner owns it now
    assert not await store.save_job(dataclasses.replace(job, owner="gw-1", done=2))
    assert await store.claim_job("nope", owner="x", now=T0, from_statuses=("running",)) is None


# -- poison ledger ------------------------------------------------------------------------------------------

async def test_isolated_runs_are_counted_forgotten_and_expire_after_a_day(store: ProcessStore) -> None:
    assert [await store.count_isolated_run("m1", T0 + i) for i in range(3)] == [1, 2, 3]
    assert await store.count_isolated_run("m2", T0) == 1
    await store.forget_isolated_runs("m1")
    assert await store.count_isolated_run("m1", T0 + 10) == 1
    await store.forget_isolated_runs("never-counted")
    await store.delete_expired(T0 + 86_400 + 5, limit=10)  # m2 untouched for over a day; m1 touched at T0 + 10
    assert await store.count_isolated_run("m2", T0 + 86_400 + 6) == 1
    assert await store.count_isolated_run("m1", T0 + 86_400 + 6) == 2
