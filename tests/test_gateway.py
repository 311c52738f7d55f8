"""The first gateway endpoints, against real PostgreSQL + RabbitMQ with a worker subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from business_cases import EcommerceOrder
from framework import Settings, Stageflow
from tests.support.cases import CASES
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from gateway.app import create_app

    async with Stageflow.from_settings(settings, cases=[*CASES, EcommerceOrder]) as flow:
        transport = httpx.ASGITransport(app=create_app(flow))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def test_start_then_poll_until_completed(client: httpx.AsyncClient, settings: Settings, tmp_path: Path) -> None:
    cluster = Cluster(settings, tmp_path, workers=1, services_modules=("business_cases.order_services",))
    await cluster.start()
    try:
        body = {"input": {"order_id": "W-1", "desired_date": "2026-12-02"}, "client_key": "W-1"}
        started = await client.post("/cases/ecommerce_order/processes", json=body)
        assert started.status_code == 201, started.text
        process_id = started.json()["process_id"]
        again = await client.post("/cases/ecommerce_order/processes", json=body)
        assert again.json()["process_id"] == process_id
        for _ in range(150):
            status = (await client.get(f"/processes/{process_id}")).json()
            if status["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        assert status["status"] == "completed", cluster.logs()
        assert status["progress"] == {"stages_done": 4, "stages_total": 4}
        assert status["result"]["job_id"] == status["store"]["job_id"]
        assert [h["event"] for h in status["history"]] == ["started", "call", "call", "next", "completed"]
    finally:
        cluster.stop()


async def test_bad_requests_get_problem_details_and_write_nothing(client: httpx.AsyncClient) -> None:
    invalid = await client.post("/cases/ecommerce_order/processes", json={"input": {"order_id": "X"}})
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"] == [{"field": "desired_date", "message": "Field required"}]
    unknown = await client.post("/cases/nope/processes", json={"input": {}})
    assert unknown.status_code == 404 and "registered cases" in unknown.json()["hint"]
    missing = await client.get("/processes/does-not-exist")
    assert missing.status_code == 404
    body = {"input": {"order_id": "C-1", "desired_date": "2026-12-02"}, "client_key": "C-1"}
    assert (await client.post("/cases/ecommerce_order/processes", json=body)).status_code == 201
    body["input"]["desired_date"] = "2026-12-03"
    conflict = await client.post("/cases/ecommerce_order/processes", json=body)
    assert conflict.status_code == 409
