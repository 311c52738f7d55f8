"""The gateway's HTTP API against real PostgreSQL + RabbitMQ: starts, webhooks, auth, limits, health, stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from framework import ConfigurationError, Settings
from tests.support.cluster import Cluster
from tests.support.gateway import READ_KEY, Gateway, open_gateway

pytestmark = pytest.mark.integration

ORDER = "/cases/ecommerce_order/processes"


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gateway:
        yield gateway


async def poll(gw: Gateway, process_id: str, until: tuple[str, ...], timeout_s: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        view = (await gw.client.get(f"/processes/{process_id}")).json()
        if view["status"] in until or asyncio.get_running_loop().time() > deadline:
            return view
        await asyncio.sleep(0.2)


async def test_start_then_poll_until_completed(gw: Gateway, settings: Settings, tmp_path: Path) -> None:
    cluster = Cluster(settings, tmp_path, workers=1, services_modules=("business_cases.order_services",))
    await cluster.start()
    try:
        body = {"input": {"order_id": "W-1", "desired_date": "2026-12-02"}, "client_key": "W-1"}
        started = await gw.client.post(ORDER, json=body)
        assert started.status_code == 201, started.text
        process_id = started.json()["process_id"]
        again = await gw.client.post(ORDER, json=body)
        assert again.status_code == 200 and again.json()["process_id"] == process_id
        status = await poll(gw, process_id, ("completed", "failed"))
        assert status["status"] == "completed", cluster.logs()
        assert status["progress"] == {"stages_done": 4, "stages_total": 4}
        assert status["result"]["job_id"] == status["store"]["job_id"]
        assert [h["event"] for h in status["history"]] == ["started", "call", "call", "next", "completed"]
        timings = status["timings"]
        assert timings["ended_at"] >= timings["created_at"] and timings["duration_s"] >= 0
        assert status["waiting"] is None and status["error"] is None and status["failures"] == []

        webhook = {"order_id": "W-2", "desired_date": "2026-12-03", "unrelated": "ignored"}
        hooked = await gw.client.post("/webhooks/ecommerce_order", json=webhook)
        assert hooked.status_code == 201, hooked.text
        assert (await gw.client.post("/webhooks/ecommerce_order", json=webhook)).status_code == 200
        view = await poll(gw, hooked.json()["process_id"], ("completed", "failed"))
        assert view["status"] == "completed" and view["client_key"] == "W-2"
        assert view["input"] == {"order_id": "W-2", "desired_date": "2026-12-03", "customer_email": None}

        stats = (await gw.client.get("/stats")).json()
        order_stats = stats["cases"]["ecommerce_order"]
        assert order_stats["by_status"] == {"completed": 2} and order_stats["success_rate"] == 1.0
        durations = stats["stage_durations"]["by_case"]["ecommerce_order"]
        assert set(durations) == {"get_schedule", "create_job", "keep_job_id", "finish"}
        assert all(d["runs"] == 2 and 0 <= d["p50_ms"] <= d["p95_ms"] for d in durations.values())
    finally:
        cluster.stop()


async def test_bad_requests_get_problem_details_and_write_nothing(gw: Gateway) -> None:
    before = await gw.process_count()
    invalid = await gw.client.post(ORDER, json={"input": {"order_id": "X"}})
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"] == [{"field": "desired_date", "message": "Field required"}]
    unknown = await gw.client.post("/cases/nope/processes", json={"input": {}})
    assert unknown.status_code == 404 and unknown.json()["hint"] == "GET /cases lists the cases (read key)"
    missing = await gw.client.get("/processes/does-not-exist")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    no_route = await gw.client.get("/nowhere")
    assert no_route.status_code == 404 and no_route.json()["status"] == 404

    # FastAPI's own validation errors are problems too, naming the field
    not_json = await gw.client.post(ORDER, content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.headers["content-type"] == "application/problem+json"
    wrong_type = await gw.client.post(ORDER, json={"input": "a string"})
    assert wrong_type.status_code == 422 and wrong_type.json()["errors"][0]["field"] == "input"
    extra = await gw.client.post(ORDER, json={"input": {}, "clientkey": "typo"})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "clientkey"
    naive = {"input": {"order_id": "N", "desired_date": "2026-12-02"}, "start_at": "2026-12-01T10:00:00"}
    assert (await gw.client.post(ORDER, json=naive)).json()["errors"][0]["field"] == "start_at"
    bad_limit = await gw.client.get("/processes", params={"limit": 0})
    assert bad_limit.status_code == 422 and bad_limit.json()["errors"][0] == {
        "in": "query", "field": "limit", "message": bad_limit.json()["errors"][0]["message"]}
    bad_cursor = await gw.client.get("/processes", params={"cursor": "garbage!"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["errors"][0]["field"] == "cursor"
    no_hook = await gw.client.post("/webhooks/crasher", json={})
    assert no_hook.status_code == 404 and "from_webhook" in no_hook.json()["hint"]
    bad_hook = await gw.client.post("/webhooks/ecommerce_order", json={"order_id": "H"})
    assert bad_hook.status_code == 422 and bad_hook.json()["errors"][0]["field"] == "desired_date"
    for response in (invalid, not_json, wrong_type, extra, bad_limit, no_route):
        assert "Traceback" not in response.text
    assert await gw.process_count() == before

    body = {"input": {"order_id": "C-1", "desired_date": "2026-12-02"}, "client_key": "C-1"}
    assert (await gw.client.post(ORDER, json=body)).status_code == 201
    body["input"]["desired_date"] = "2026-12-03"
    conflict = await gw.client.post(ORDER, json=body)
    assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
    assert await gw.process_count() == before + 1


async def test_oversize_bodies_are_refused_before_parsing(gw: Gateway) -> None:
    before = await gw.process_count()
    huge = {"input": {"order_id": "B", "desired_date": "2026-12-02", "customer_email": "x" * (1024 * 1024)}}
    declared = await gw.client.post(ORDER, json=huge)
    assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"input": {"order_id": "B", "desired_date": "2026-12-02", "customer_email": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}}'

    streamed = await gw.client.post(ORDER, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["status"] == 413
    assert await gw.process_count() == before


async def test_api_keys(gw: Gateway, settings: Settings) -> None:
    body = {"input": {"order_id": "K-1", "desired_date": "2026-12-02"}}
    no_key = await gw.client.post(ORDER, json=body, headers={"X-API-Key": ""})
    assert no_key.status_code == 401 and no_key.headers["content-type"] == "application/problem+json"
    assert "X-API-Key" in no_key.headers["www-authenticate"]
    wrong = await gw.client.get("/processes", headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401
    read = {"X-API-Key": READ_KEY}
    assert (await gw.client.get("/processes", headers=read)).status_code == 200
    assert (await gw.client.get("/cases", headers=read)).status_code == 200
    forbidden = await gw.client.post(ORDER, json=body, headers=read)
    assert forbidden.status_code == 403 and forbidden.json()["status"] == 403
    assert (await gw.client.post("/processes/x/cancel", headers=read)).status_code == 403
    assert (await gw.client.post("/processes/reprocess", json={}, headers=read)).status_code == 403
    assert await gw.process_count() == 0
    assert (await gw.client.get("/healthz", headers={"X-API-Key": ""})).json() == {"status": "ok"}
    ready = await gw.client.get("/readyz", headers={"X-API-Key": ""})
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # the checks need a key
    openapi = (await gw.client.get("/openapi.json", headers=read)).json()
    assert "/processes/{process_id}/retry" in openapi["paths"]

    from gateway.app import create_app

    with pytest.raises(ConfigurationError) as refused:
        create_app(gw.flow, settings)  # the test settings have no keys
    assert "STAGEFLOW_GATEWAY_INSECURE=true" in (refused.value.hint or "")
    async with open_gateway(settings, api_keys_read=[], api_keys_operate=[], gateway_insecure=True) as open_gw:
        assert (await open_gw.client.get("/processes", headers={"X-API-Key": ""})).status_code == 200


async def test_cases_and_stats_shape(gw: Gateway) -> None:
    cases = {c["name"]: c for c in (await gw.client.get("/cases")).json()}
    order = cases["ecommerce_order"]
    assert order["stages"] == ["get_schedule", "create_job", "keep_job_id", "finish"]
    assert order["versions"] == [1] and order["webhook"] is True and cases["crasher"]["webhook"] is False
    assert "order_id" in order["input_schema"]["properties"]
    stats = (await gw.client.get("/stats")).json()
    assert stats == {"total": 0, "by_status": {}, "success_rate": None, "cases": {}, "age_s": 0.0,
                     "stage_durations": {"sample_processes": 1000, "by_case": {}},
                     "last_hour": {"window_s": 3600.0, "stuck_after_s": 60.0, "cases": {}}}


async def test_admin_page_needs_no_key_and_has_a_strict_csp(gw: Gateway) -> None:
    no_key = {"X-API-Key": ""}
    page = await gw.client.get("/admin", headers=no_key)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/admin/static/app.js"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = await gw.client.get(f"/admin/static/{name}", headers=no_key)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["content-security-policy"] == csp
    script = (await gw.client.get("/admin/static/app.js")).text
    assert "innerHTML" not in script.replace("never through innerHTML", "")  # data goes in as text only
    for path in ("/admin/static/index.html", "/admin/static/..%2F..%2Fapp.py", "/admin/static/nope.js"):
        assert (await gw.client.get(path, headers=no_key)).status_code == 404, path
    assert (await gw.client.get("/processes", headers=no_key)).status_code == 401  # the data still needs a key
    assert "/admin" not in (await gw.client.get("/openapi.json")).json()["paths"]
