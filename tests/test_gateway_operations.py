"""The gateway's lists (filters, keyset pages) and operator actions (retry, cancel, reprocess) over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from framework import Settings
from tests.support.cluster import Cluster
from tests.support.gateway import Gateway, open_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gateway:
        yield gateway


async def wait_status(gw: Gateway, process_id: str, statuses: tuple[str, ...], timeout_s: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        view = (await gw.client.get(f"/processes/{process_id}")).json()
        if view["status"] in statuses or asyncio.get_running_loop().time() > deadline:
            return view
        await asyncio.sleep(0.2)


async def wait_job(gw: Gateway, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = (await gw.client.get(f"/jobs/{job_id}")).json()
        if job["status"] != "running" or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(0.1)


async def all_pages(gw: Gateway, limit: int, **params: str) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await gw.client.get("/processes", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


async def test_list_filters_and_pages(gw: Gateway) -> None:
    ids = []
    for i in range(30):
        body = {"input": {"order_id": f"L-{i}", "desired_date": "2026-12-02"}}
        ids.append((await gw.client.post("/cases/ecommerce_order/processes", json=body)).json()["process_id"])
        if i == 14:
            midway = (await gw.flow.get(ids[-1])).created_at
    ids.append((await gw.client.post("/cases/jumper/processes", json={"input": {"word": "w"}})).json()["process_id"])
    for process_id in ids[:4]:
        assert (await gw.client.post(f"/processes/{process_id}/cancel", json={"reason": "test"})).status_code == 200

    pages = await all_pages(gw, 7, case="ecommerce_order")
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    listed = [item["process_id"] for page in pages for item in page]
    assert listed == list(reversed(ids[:30]))  # newest first: no duplicate, no gap
    created = [item["created_at"] for page in pages for item in page]
    assert created == sorted(created, reverse=True)
    item = pages[0][0]
    assert set(item) == {"process_id", "case", "case_version", "status", "stage", "client_key", "created_at",
                         "updated_at", "ended_at", "waiting", "error"}  # a summary, not the document
    assert item["stage"] == "get_schedule" and item["case_version"] == 1

    everything = [i["process_id"] for p in await all_pages(gw, 100) for i in p]
    assert everything == list(reversed(ids))
    cancelled = [i["process_id"] for p in await all_pages(gw, 3, status="cancelled") for i in p]
    assert cancelled == list(reversed(ids[:4]))
    assert [i["error"]["reason"] for p in await all_pages(gw, 3, status="cancelled") for i in p] == ["test"] * 4
    iso = datetime.fromtimestamp(midway, UTC).isoformat()  # to the microsecond: ids[14] may fall either side
    after = [i["process_id"] for p in await all_pages(gw, 50, case="ecommerce_order", created_after=iso) for i in p]
    before = [i["process_id"] for p in await all_pages(gw, 50, case="ecommerce_order", created_before=iso) for i in p]
    assert set(after) | set(before) == set(ids[:30]) and not set(after) & set(before)
    assert set(after) >= set(ids[15:30]) and set(before) >= set(ids[:14])
    none = await gw.client.get("/processes", params={"case": "jumper", "status": "failed"})
    assert none.json() == {**none.json(), "items": [], "next_cursor": None}


async def test_retry_cancel_reprocess(gw: Gateway, settings: Settings, tmp_path: Path) -> None:
    cluster = Cluster(settings, tmp_path, workers=1)
    await cluster.start()
    try:
        # a process fails on bad input; an operator retries it with corrected input over HTTP
        fixable = (await gw.client.post("/cases/fixable/processes", json={"input": {"quantity": 0}})).json()
        failed = await wait_status(gw, fixable["process_id"], ("failed", "completed"))
        assert failed["status"] == "failed", cluster.logs()
        assert failed["error"]["stage"] == "check"
        listed = (await gw.client.get("/processes", params={"status": "failed", "failed_stage": "check"})).json()
        assert [i["process_id"] for i in listed["items"]] == [fixable["process_id"]]
        bad = await gw.client.post(f"/processes/{fixable['process_id']}/retry", json={"input": {"quantity": "x"}})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "quantity"
        assert (await gw.flow.get(fixable["process_id"])).status.value == "failed"  # bad input changed nothing
        unknown_stage = await gw.client.post(f"/processes/{fixable['process_id']}/retry", json={"from_stage": "nope"})
        assert unknown_stage.status_code == 422
        retried = await gw.client.post(f"/processes/{fixable['process_id']}/retry", json={"input": {"quantity": 3}})
        assert retried.status_code == 200 and retried.json()["status"] == "running"
        done = await wait_status(gw, fixable["process_id"], ("completed", "failed"))
        assert done["status"] == "completed" and done["result"] == {"quantity": 3, "prepared": True}
        assert "retried" in [h["event"] for h in done["history"]]
        again = await gw.client.post(f"/processes/{fixable['process_id']}/retry")
        assert again.status_code == 409 and "completed" in again.json()["detail"]

        # a process waits to retry a failing stage: listed as `retrying`, with what it waits for and until when
        flaky = (await gw.client.post("/cases/flaky/processes", json={"input": {"succeed_on": 3}})).json()
        waiting = await wait_status(gw, flaky["process_id"], ("waiting",))
        assert waiting["waiting"]["kind"] == "timer" and waiting["waiting"]["reason"] == "retry"
        assert waiting["waiting"]["until"] > waiting["timings"]["updated_at"]
        retrying = (await gw.client.get("/processes", params={"status": "retrying"})).json()["items"]
        assert [i["process_id"] for i in retrying] == [flaky["process_id"]]
        assert retrying[0]["waiting"]["reason"] == "retry"

        # cancel it; a second cancel is refused; the cancelled process can be reprocessed
        cancelled = await gw.client.post(f"/processes/{flaky['process_id']}/cancel", json={"reason": "enough"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        twice = await gw.client.post(f"/processes/{flaky['process_id']}/cancel")
        assert twice.status_code == 409 and twice.headers["content-type"] == "application/problem+json"
        assert (await gw.client.post("/processes/nope/cancel")).status_code == 404

        # processes that always fail, reprocessed by filter
        crashers = [(await gw.client.post("/cases/crasher/processes", json={})).json()["process_id"]
                    for _ in range(3)]
        for process_id in crashers:
            assert (await wait_status(gw, process_id, ("failed",)))["status"] == "failed"
        started = await gw.client.post("/processes/reprocess", json={"case": "crasher", "failed_stage": "boom"})
        assert started.status_code == 202 and started.headers["location"] == f"/jobs/{started.json()['job_id']}"
        job = await wait_job(gw, started.json()["job_id"])
        assert {k: job[k] for k in ("status", "total", "done", "failed", "progress", "errors")} == {
            "status": "completed", "total": 3, "done": 3, "failed": 0, "progress": 1.0, "errors": []}
        for process_id in crashers:
            view = await wait_status(gw, process_id, ("failed",))
            events = [h["event"] for h in view["history"]]
            assert view["status"] == "failed" and events.count("retried") == 1, events
        bad_filter = await gw.client.post("/processes/reprocess", json={"status": "running"})
        assert bad_filter.status_code == 422 and bad_filter.json()["errors"][0]["field"] == "status"
        stats = (await gw.client.get("/stats")).json()
        assert stats["cases"]["crasher"]["success_rate"] == 0.0 and stats["cases"]["fixable"]["success_rate"] == 1.0
    finally:
        cluster.stop()
