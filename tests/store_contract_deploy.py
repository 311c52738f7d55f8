"""The store contract as tests, continued: ``DeployStore``, the worker registry and the deploy queries of live
processes (by case, version and reach, or stage and waiting kind), kept current by create, commit and fan-out."""

from __future__ import annotations

from framework.document import Status
from framework.fanout import NewFanOut
from framework.state import EventWait, FanOutWait
from framework.store.protocols import ProcessStore
from framework.store.records import LiveGroup, WorkerRow
from tests.store_contract import RETRY_WAIT, SERVICE_WAIT, T0, TIMER_WAIT, commit, doc_of, entry_of, next_of


def worker_row(worker_id: str, *, release: str = "r1", last_seen: float = T0, heartbeat_s: float = 5.0,
               carries: tuple[tuple[str, int], ...] = (("order", 1),)) -> WorkerRow:
    return WorkerRow(worker_id, release, carries, T0 - 100, last_seen, heartbeat_s)


async def test_workers_are_recorded_refreshed_gone_after_three_heartbeats_and_removed(store: ProcessStore) -> None:
    await store.record_worker(worker_row("h:1:a", carries=(("order", 1), ("order", 2))))
    await store.record_worker(worker_row("h:2:b", release="r2", heartbeat_s=1.0))
    assert await store.running_workers(T0) == [
        worker_row("h:1:a", carries=(("order", 1), ("order", 2))), worker_row("h:2:b", release="r2", heartbeat_s=1.0)]
    # 3 of its 1 s heartbeats without a word: h:2:b is gone, h:1:a (5 s) is not
    assert [w.worker_id for w in await store.running_workers(T0 + 3.5)] == ["h:1:a"]
    assert [w.worker_id for w in await store.running_workers(T0 + 15)] == ["h:1:a"]  # at the edge: still seen
    assert await store.running_workers(T0 + 15.5) == []
    await store.record_worker(worker_row("h:1:a", last_seen=T0 + 10, carries=(("order", 2),)))  # refreshed
    refreshed = await store.running_workers(T0 + 20)
    assert refreshed == [worker_row("h:1:a", last_seen=T0 + 10, carries=(("order", 2),))]
    assert await store.running_workers(T0) == refreshed  # h:2:b's row went with that heartbeat
    await store.remove_worker("h:1:a")
    await store.remove_worker("h:1:a")  # twice: nothing to remove
    assert await store.running_workers(T0 + 10) == []


async def test_live_processes_by_reach_and_by_stage_follow_creates_and_commits(store: ProcessStore) -> None:
    event = EventWait(name="paid", resume="ship", from_stage="pay", since=T0)
    created = {
        "run": doc_of("run"),                                                     # running at s1
        "svc": doc_of("svc", status=Status.WAITING, waiting=SERVICE_WAIT),      # s1 asked, s2 resumes
        "retry": doc_of("retry", status=Status.WAITING, waiting=RETRY_WAIT),    # s1 again
        "timer": doc_of("timer", status=Status.WAITING, waiting=TIMER_WAIT),   # at s1, then s2
        "event": doc_of("event", status=Status.WAITING, waiting=event, stage="pay", case_version=2),
        "done": doc_of("done", status=Status.COMPLETED, ended_at=T0 + 1),
        "refund": doc_of("refund", case="refund"),
    }
    for doc in created.values():
        assert (await store.create(doc, entry_of(1), due_at=None))[1]
    assert await store.live_reach() == [
        LiveGroup("order", 1, 2, reach="s1"), LiveGroup("order", 1, 2, reach="s1 s2"),
        LiveGroup("order", 2, 1, reach="pay ship"), LiveGroup("refund", 1, 1, reach="s1")]
    assert await store.live_stages() == [
        LiveGroup("order", 1, 1, stage="s1"), LiveGroup("order", 1, 1, stage="s1", waiting="service"),
        LiveGroup("order", 1, 2, stage="s1", waiting="timer"), LiveGroup("order", 2, 1, stage="pay", waiting="event"),
        LiveGroup("refund", 1, 1, stage="s1")]
    # commits move them: the running one on to s3, the event's one finished, the refund fans out
    await commit(store, next_of(created["run"], stage="s3"))
    await commit(store, next_of(created["event"], status=Status.COMPLETED, ended_at=T0 + 2, stage="ship", waiting=None))
    fan = FanOutWait(group=2, resume="join", from_stage="s1", total=1, since=T0)
    refund = next_of(created["refund"], status=Status.WAITING, waiting=fan)
    assert await store.commit_fan_out(refund, entry_of(2), expected_version=1, due_at=None,
                                      fan_out=NewFanOut(2, ['{"i":0}'], window=1, tolerate=0, first=False))
    assert await store.live_reach() == [
        LiveGroup("order", 1, 1, reach="s1"), LiveGroup("order", 1, 2, reach="s1 s2"),
        LiveGroup("order", 1, 1, reach="s3"), LiveGroup("refund", 1, 1, reach="join s1")]
    assert (await store.live_stages())[-1] == LiveGroup("refund", 1, 1, stage="s1", waiting="fan_out")
