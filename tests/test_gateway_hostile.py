"""The gateway against hostile callers, on real PostgreSQL + RabbitMQ: nothing they send crashes, leaks or
half-changes anything (NUL characters PostgreSQL cannot keep, integers past int32, broken bodies, no key)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from framework import InvalidInputError, Settings
from tests.support.gateway import READ_KEY, Gateway, open_gateway

pytestmark = pytest.mark.integration

ORDER = "/cases/ecommerce_order/processes"
LEAKS = ("PostgreSQL", "asyncpg", "invalid byte sequence", "Traceback", "unsupported Unicode", "jumper")


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gateway:
        yield gateway


async def _started(gw: Gateway) -> str:
    started = await gw.client.post(ORDER, json={"input": {"order_id": "H-1", "desired_date": "2026-12-02"}})
    assert started.status_code == 201, started.text
    return str(started.json()["process_id"])


async def test_nul_characters_and_out_of_range_integers_are_404_or_422_never_500(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = await _started(gw)
    requests = [
        ("GET", "/processes/abc%00def"), ("GET", "/processes?case=a%00b"), ("GET", "/processes?failed_stage=a%00"),
        ("GET", "/processes?cursor=a%00b"), ("GET", f"/processes/{pid}/items?group=2147483648"),
        ("GET", f"/processes/{pid}/items?after=2147483648"), ("GET", f"/processes/{pid}/items?group=-2147483649"),
        ("GET", "/processes/a%00/items"), ("GET", "/jobs/a%00"), ("POST", "/jobs/a%00/resume"),
        ("POST", "/schedules/a%00/pause"), ("POST", "/schedules/a%00/resume"), ("POST", "/processes/a%00/cancel"),
        ("POST", "/processes/a%00/retry"), ("POST", "/cases/a%00/processes"), ("POST", "/webhooks/a%00"),
        ("GET", "/processes/%00"), ("GET", "/processes?case=%00&status=failed"),
    ]
    for method, url in requests:
        response = await gw.client.request(method, url, json={} if method == "POST" else None)
        assert response.status_code in (404, 422), (method, url, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", (url, response.headers)
        assert not any(leak in response.text for leak in LEAKS), (url, response.text)
    logged = capsys.readouterr()
    assert "Traceback" not in logged.err + logged.out and "unexpected gateway error" not in logged.err + logged.out


async def test_a_reason_or_input_the_store_refuses_is_a_422_that_changes_nothing(gw: Gateway) -> None:
    pid = await _started(gw)
    before = await gw.flow.get(pid)
    refused = await gw.client.post(f"/processes/{pid}/cancel", json={"reason": "stop\u0000now"})
    assert refused.status_code == 422, refused.text
    assert not any(leak in refused.text for leak in LEAKS), refused.text
    after = await gw.flow.get(pid)
    assert (after.status, after.version, after.error) == (before.status, before.version, None)

    assert (await gw.client.post(f"/processes/{pid}/cancel", json={"reason": "for the test"})).status_code == 200
    cancelled = await gw.flow.get(pid)
    bad_input = {"input": {"order_id": "H-\u0000", "desired_date": "2026-12-02"}}
    retried = await gw.client.post(f"/processes/{pid}/retry", json=bad_input)
    assert retried.status_code == 422, retried.text
    assert not any(leak in retried.text for leak in LEAKS), retried.text
    still = await gw.flow.get(pid)
    assert (still.status.value, still.version, still.input) == ("cancelled", cancelled.version, cancelled.input)

    count = await gw.process_count()
    started = await gw.client.post(ORDER, json=bad_input)
    assert started.status_code == 422 and not any(leak in started.text for leak in LEAKS), started.text
    for body in ({"from_stage": "a\u0000"}, {"case": "\u0000"}, {"failed_stage": "x\u0000y"}):
        job = await gw.client.post("/processes/reprocess", json=body)
        assert job.status_code == 422, job.text
    assert (await gw.client.get("/jobs")).json()["items"] == []
    not_utf8 = await gw.client.post(ORDER, content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert not_utf8.status_code == 422, not_utf8.text
    nul_order = {"order_id": "W\u0000", "desired_date": "2026-12-02"}
    webhook = await gw.client.post("/webhooks/ecommerce_order", json=nul_order)
    assert webhook.status_code == 422 and not any(leak in webhook.text for leak in LEAKS), webhook.text
    assert await gw.process_count() == count


async def test_an_operators_data_the_store_refuses_changes_nothing_from_python_too(gw: Gateway) -> None:
    # The gateway refuses a NUL before any write; flow.operations must not charge it to the stage either.
    pid = await _started(gw)
    before = await gw.flow.get(pid)
    with pytest.raises(InvalidInputError, match="cannot keep"):
        await gw.flow.operations.cancel(pid, reason="stop\u0000now")
    after = await gw.flow.get(pid)
    assert (after.status, after.version, after.error) == (before.status, before.version, None)


async def test_the_key_is_checked_before_the_body_is_read(gw: Gateway) -> None:
    for url in (ORDER, "/processes/x/cancel", "/processes/reprocess", "/schedules/s/pause"):
        no_key = await gw.client.post(url, content=b"{not json",
                                      headers={"Content-Type": "application/json", "X-API-Key": ""})
        assert no_key.status_code == 401, (url, no_key.text)
        unknown = await gw.client.post(url, content=b"{", headers={"X-API-Key": "k" * 40})
        assert unknown.status_code == 401, (url, unknown.text)
        read_only = await gw.client.post(url, content=b"{", headers={"X-API-Key": READ_KEY})
        assert read_only.status_code == 403, (url, read_only.text)
    assert (await gw.client.post(ORDER, content=b"{not json")).status_code == 422  # the right key: the body's turn


async def test_api_docs_are_off_and_the_schema_needs_a_key(gw: Gateway) -> None:
    for url in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await gw.client.get(url, headers={"X-API-Key": READ_KEY})).status_code == 404, url
    assert (await gw.client.get("/openapi.json", headers={"X-API-Key": ""})).status_code == 401
    assert (await gw.client.get("/openapi.json", headers={"X-API-Key": READ_KEY})).status_code == 200


async def test_callers_without_a_key_learn_nothing_internal(gw: Gateway) -> None:
    ready = await gw.client.get("/readyz", headers={"X-API-Key": ""})
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    detailed = await gw.client.get("/readyz", headers={"X-API-Key": READ_KEY})
    assert detailed.json() == {"status": "ready", "checks": {"store": "ok", "broker": "ok"}}
    unknown = await gw.client.post("/cases/no_such_case/processes", json={"input": {}})
    assert unknown.status_code == 404 and "no_such_case" in unknown.text
    assert not any(name in unknown.text for name in ("ecommerce_order", "jumper", "five_calls")), unknown.text


async def test_the_schema_documents_the_problems_each_route_sends(gw: Gateway) -> None:
    schema = (await gw.client.get("/openapi.json")).json()
    problem = {"$ref": "#/components/schemas/Problem"}
    expected = {
        ("post", "/cases/{case}/processes"): {"401", "403", "404", "409", "413", "422", "503"},
        ("post", "/processes/{process_id}/cancel"): {"401", "403", "404", "409", "413", "422", "503"},
        ("get", "/processes/{process_id}/items"): {"401", "403", "404", "422", "503"},
        ("get", "/processes"): {"401", "403", "404", "422", "503"},  # 404: search= on an unknown case
        ("post", "/jobs/{job_id}/resume"): {"401", "403", "404", "409", "413", "422", "503"},
        ("post", "/schedules/{name}/pause"): {"401", "403", "404", "413", "422", "503"},
        ("get", "/readyz"): {"422", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = schema["paths"][path][method]["responses"]
        assert {s for s in responses if s.startswith(("4", "5"))} == statuses, (method, path, sorted(responses))
        for status in statuses:
            assert responses[status]["content"]["application/problem+json"]["schema"] == problem, (path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's own 422 shape is not sent
