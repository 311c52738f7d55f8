"""Bulk reprocess as a background job (progress from any gateway, interrupted and resumed), /metrics, and the
cached /stats: a gateway app on real PostgreSQL + RabbitMQ (no workers needed: reprocessed processes are
cancelled ones, so a retry only writes the document and publishes its message)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework import Settings
from framework.store.base import Job, ProcessFilter
from framework.store.postgres import PostgresStore
from framework.store.sqlite import SqliteStore
from tests.support.gateway import READ_KEY, Gateway, open_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gateway:
        yield gateway


async def cancelled_processes(gw: Gateway, n: int, case: str = "jumper") -> list[str]:
    ids = []
    for i in range(n):
        doc = await gw.flow.start(case, {"word": f"w{i}"})
        await gw.flow.operations.cancel(doc.process_id, reason="set up")
        ids.append(doc.process_id)
    return ids


async def poll_job(gw: Gateway, job_id: str, done: object, timeout_s: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await gw.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job) or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(0.05)


async def retried_events(gw: Gateway, process_ids: list[str]) -> list[int]:
    return [[h["event"] for h in await gw.flow.store.history(p)].count("retried") for p in process_ids]


async def test_reprocess_job_is_seen_from_another_gateway_interrupted_and_resumed(
    gw: Gateway, settings: Settings
) -> None:
    ids = await cancelled_processes(gw, 60)
    async with open_gateway(settings) as other:
        gw.app.state.jobs.page_size = 5  # many small pages, so the job is caught half-way
        started = await gw.client.post("/processes/reprocess", json={"status": "cancelled", "case": "jumper"})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        assert started.json()["status"] == "running" and started.json()["runner"].startswith("gateway-")

        # the other gateway sees it progress, then the first one stops (a restart): interrupted, not lost
        half = await poll_job(other, job_id, lambda j: j["done"] >= 15)
        assert half["status"] == "running" and half["total"] == 60 and 0 < half["progress"] < 1, half
        await gw.app.state.shutdown()
        stopped = (await other.client.get(f"/jobs/{job_id}")).json()
        assert stopped["status"] == "interrupted" and stopped["done"] < 60, stopped
        assert stopped["cursor"] is not None and "stopped" in stopped["error"]
        assert (await other.client.post(f"/jobs/{job_id}/resume", headers={"X-API-Key": READ_KEY})).status_code == 403

        # the other gateway resumes it after its cursor: every process retried exactly once
        resumed = await other.client.post(f"/jobs/{job_id}/resume")
        assert resumed.status_code == 202 and resumed.json()["status"] == "running"
        final = await poll_job(other, job_id, lambda j: j["status"] != "running")
        assert {k: final[k] for k in ("status", "total", "done", "failed", "progress", "error")} == {
            "status": "completed", "total": 60, "done": 60, "failed": 0, "progress": 1.0, "error": None}
        assert await retried_events(gw, ids) == [1] * 60
        assert {(await gw.flow.get(p)).status.value for p in ids} == {"running"}
        again = await other.client.post(f"/jobs/{job_id}/resume")
        assert again.status_code == 409 and "completed" in again.json()["detail"]
        assert (await other.client.get("/jobs/nope")).status_code == 404
        listed = (await other.client.get("/jobs", headers={"X-API-Key": READ_KEY})).json()["items"]
        assert [j["job_id"] for j in listed] == [job_id]


async def test_job_of_a_killed_gateway_goes_interrupted_and_errors_are_kept(gw: Gateway) -> None:
    ids = await cancelled_processes(gw, 3)
    # a job whose runner died without a word (SIGKILL): it is recorded as running, and nobody runs it
    orphan = await gw.app.state.jobs.create_reprocess(ProcessFilter(status="cancelled"))
    assert (await gw.client.get(f"/jobs/{orphan.job_id}")).json()["status"] == "running"
    gw.app.state.jobs.stale_after_s = 0.3  # its heartbeat stops; after this long it is marked interrupted
    await asyncio.sleep(0.5)
    seen = (await gw.client.get(f"/jobs/{orphan.job_id}")).json()
    assert seen["status"] == "interrupted" and seen["ended_at"] is not None

    # processes the job cannot retry are counted and their reasons kept; the job still completes
    bad = await gw.client.post("/processes/reprocess", json={"status": "cancelled", "from_stage": "nope"})
    job = await poll_job(gw, bad.json()["job_id"], lambda j: j["status"] != "running")
    assert (job["status"], job["done"], job["failed"]) == ("completed", 0, 3)
    assert sorted(e["process_id"] for e in job["errors"]) == sorted(ids)
    assert all("no stage 'nope'" in e["reason"] for e in job["errors"])
    assert await retried_events(gw, ids) == [0, 0, 0]  # nothing changed

    refused = await gw.client.post("/processes/reprocess", json={"status": "completed"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "status"
    assert len((await gw.client.get("/jobs")).json()["items"]) == 2  # the refused one wrote nothing


async def test_metrics_and_cached_stats(settings: Settings) -> None:
    async with open_gateway(settings, gateway_stats_fresh_s=1.0) as gw:
        ids = await cancelled_processes(gw, 2)
        assert (await gw.client.get(f"/processes/{ids[0]}")).status_code == 200
        assert (await gw.client.get("/processes/nope")).status_code == 404
        assert (await gw.client.get("/metrics", headers={"X-API-Key": ""})).status_code == 401

        response = await gw.client.get("/metrics", headers={"X-API-Key": READ_KEY})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(response.text) for s in family.samples}
        assert samples[("stageflow_processes", (("case", "jumper"), ("status", "cancelled")))] == 2
        get_one = (("method", "GET"), ("route", "/processes/{process_id}"))
        assert samples[("stageflow_gateway_requests_total", (*get_one, ("status", "200")))] == 1
        assert samples[("stageflow_gateway_requests_total", (*get_one, ("status", "404")))] == 1
        assert samples[("stageflow_gateway_request_duration_seconds_count", get_one)] == 2
        assert not any("p-" in dict(labels).get("route", "") for _, labels in samples)  # templates, not ids
        for invented in ("BREW", "PROPFIND", "X-ANYTHING"):  # unknown methods fold into one label
            await gw.client.request(invented, "/cases", headers={"X-API-Key": READ_KEY})
        text = (await gw.client.get("/metrics", headers={"X-API-Key": READ_KEY})).text
        methods = {s.labels["method"] for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "stageflow_gateway_requests_total"}
        assert methods == {"GET", "other"}

        # /stats counts at most every second: a new process shows up only once the cache is refreshed
        assert (await gw.client.get("/stats")).json()["total"] == 2
        await gw.flow.start("jumper", {"word": "new"})
        cached = (await gw.client.get("/stats")).json()
        assert cached["total"] == 2 and cached["age_s"] < 1.0
        deadline = asyncio.get_running_loop().time() + 10
        while (stats := (await gw.client.get("/stats")).json())["total"] != 3:
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.2)
    # a second app has its own registry: no global state between apps
    async with open_gateway(settings) as fresh:
        text = (await fresh.client.get("/metrics")).text
        assert 'route="/processes/{process_id}"' not in text


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_job_rows_in_both_stores(kind: str, settings: Settings, tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "jobs.db")) if kind == "sqlite" else PostgresStore(
        settings.store_url, schema=settings.store_schema, min_size=1, max_size=2)
    async with store:
        job = Job(job_id="job-1", kind="reprocess", params={"filter": {}}, owner="a/1", created_at=10.0,
                  updated_at=10.0)
        await store.create_job(job)
        job.done, job.cursor, job.updated_at = 5, "p-5", 20.0
        assert await store.save_job(job)
        assert (await store.load_job("job-1")) == job
        assert await store.claim_job("job-1", owner="b/2", now=21.0, from_statuses=("interrupted",)) is None
        assert await store.interrupt_stale_jobs(stale_before=15.0, now=30.0) == 0  # it beat at 20
        assert await store.interrupt_stale_jobs(stale_before=25.0, now=30.0) == 1
        interrupted = await store.load_job("job-1")
        assert interrupted is not None and (interrupted.status, interrupted.ended_at) == ("interrupted", 30.0)
        claimed = await store.claim_job("job-1", owner="b/2", now=31.0, from_statuses=("interrupted",))
        assert claimed is not None and (claimed.status, claimed.owner, claimed.done, claimed.cursor) == (
            "running", "b/2", 5, "p-5")
        assert claimed.ended_at is None and claimed.error is None
        assert not await store.save_job(job)  # the first owner lost it: its saves change nothing
        assert (await store.list_jobs(limit=5))[0].owner == "b/2"
        assert await store.count_matching(ProcessFilter(), timeout_s=1.0) == 0
