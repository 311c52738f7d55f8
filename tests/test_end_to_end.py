"""A case runs start to end through real worker subprocesses on RabbitMQ + PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from business_cases import EcommerceOrder
from framework import InvalidInputError, ProcessConflictError, Settings, Stageflow, Status
from tests.support.cases import CASES, FiveCalls, Jumper
from tests.support.cluster import Cluster, wait_finished

pytestmark = pytest.mark.integration


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=[*CASES, EcommerceOrder]) as flow:
        yield flow


@pytest.fixture
async def cluster(flow: Stageflow, settings: Settings, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        settings, tmp_path, workers=2,
        services_modules=("tests.support.services", "business_cases.order_services"),
    )
    await cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"


async def test_case_runs_to_completion_with_jump_reply_and_store(flow: Stageflow, cluster: Cluster) -> None:
    doc = await flow.start(Jumper, {"word": "hello"})
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=30)
    assert done.status is Status.COMPLETED, cluster.logs()
    # the jump skipped "second"; the store carried data across stages; the reply resumed "fourth"
    assert done.result == {"word": "HELLO", "seen": ["first", "third", "fourth"]}
    assert done.store["reply"] == {"step": 1, "ok": True}
    history = await flow.store.history(doc.process_id)
    assert [(h["version"], h.get("stage"), h["event"]) for h in history] == [
        (1, None, "started"),
        (2, "first", "next"),
        (3, "third", "call"),
        (4, "fourth", "completed"),
    ]


async def test_every_service_reply_resumes_the_right_stage(flow: Stageflow, cluster: Cluster) -> None:
    docs = [await flow.start(FiveCalls, {"n": n}) for n in range(20)]
    finished = await wait_finished(flow, [d.process_id for d in docs], timeout_s=60)
    assert [d.status for d in finished] == [Status.COMPLETED] * 20, cluster.logs()
    for d in finished:
        assert [d.store[f"reply_{step}"]["step"] for step in range(1, 6)] == [1, 2, 3, 4, 5]
        assert d.result == {"n": d.input["n"], "steps": 5}


async def test_example_order_runs_with_its_services(flow: Stageflow, cluster: Cluster) -> None:
    doc = await flow.start(EcommerceOrder, {"order_id": "ORD-1", "desired_date": "2026-12-24"}, client_key="ORD-1")
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=30)
    assert done.status is Status.COMPLETED, cluster.logs()
    assert done.result["job_id"].startswith("JOB-")
    assert done.result["slot"].startswith("2026-12-24T")
    assert done.store["job_id"] == done.result["job_id"]


async def test_failing_stage_fails_the_process_with_its_reason(flow: Stageflow, cluster: Cluster) -> None:
    doc = await flow.start("crasher")
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=30)
    assert done.status is Status.FAILED
    assert done.error.stage == "boom"
    assert done.error.reason == "RuntimeError: the stage blew up"


async def test_client_key_never_starts_a_second_process(flow: Stageflow) -> None:
    first = await flow.start(Jumper, {"word": "a"}, client_key="order-42")
    again = await flow.start(Jumper, {"word": "a"}, client_key="order-42")
    assert again.process_id == first.process_id
    with pytest.raises(ProcessConflictError):
        await flow.start(Jumper, {"word": "different"}, client_key="order-42")
    assert await flow.store.count_by_status() == {"running": 1}


async def test_invalid_input_names_the_field_and_writes_nothing(flow: Stageflow) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await flow.start(EcommerceOrder, {"order_id": "", "desired_date": "not a date"})
    fields = {e["field"] for e in raised.value.errors}
    assert fields == {"order_id", "desired_date"}
    assert await flow.store.count_by_status() == {}
