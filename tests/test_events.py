"""Events, lookup by client key, callback tokens and the cancel cascade over HTTP, on RabbitMQ + PostgreSQL with
worker subprocesses. Every refusal is checked to change nothing (the document's version stays)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from framework import Settings
from tests.support.cluster import CASE_MODULES, Cluster
from tests.support.gateway import READ_KEY, Gateway, open_gateway

pytestmark = pytest.mark.integration

CASES = f"{CASE_MODULES},tests.support.signal_cases"


@pytest.fixture
async def gw(settings: Settings, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gateway:  # its store creates the schema the workers use
        cluster = Cluster(settings, tmp_path, workers=2, services_modules=(), cases=CASES)
        await cluster.start()
        try:
            yield gateway
        finally:
            cluster.stop()


async def view_when(gw: Gateway, process_id: str, predicate, timeout_s: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        view = (await gw.client.get(f"/processes/{process_id}")).json()
        if predicate(view) or asyncio.get_running_loop().time() > deadline:
            return view
        await asyncio.sleep(0.1)


def waits_for_event(view: dict) -> bool:
    return (view.get("waiting") or {}).get("kind") == "event"


async def start(gw: Gateway, case: str, data: dict, client_key: str | None = None) -> str:
    body = {"input": data, **({"client_key": client_key} if client_key else {})}
    response = await gw.client.post(f"/cases/{case}/processes", json=body)
    assert response.status_code == 201, response.text
    return response.json()["process_id"]


async def test_events_by_id_and_by_client_key_and_bad_input_changes_nothing(gw: Gateway) -> None:
    pid = await start(gw, "await_payment", {}, client_key="order-7")
    waiting = await view_when(gw, pid, waits_for_event)
    assert waiting["waiting"]["name"] == "paid" and waiting["status"] == "waiting"
    version = waiting["version"]

    refused = {
        ("/processes/nope/events/paid", '{"data": {}}'): 404,
        ("/cases/await_payment/keys/nope/events/paid", '{"data": {}}'): 404,
        (f"/processes/{pid}/events/bad%20name", '{"data": {}}'): 422,
        (f"/processes/{pid}/events/paid", '{"data": "a\\u0000b"}'): 422,
        (f"/processes/{pid}/events/paid", '{"data": "' + "x" * 40_000 + '"}'): 422,
        (f"/processes/{pid}/events/paid", '{"data": {}, "unknown": 1}'): 422,
        (f"/processes/{pid}/events/paid", '{"data": {}, "event_id": ""}'): 422,
        (f"/processes/{pid}/events/paid", "not json"): 422,
    }
    for (path, body), status in refused.items():
        response = await gw.client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    read_only = await gw.client.post(f"/processes/{pid}/events/paid", json={}, headers={"X-API-Key": READ_KEY})
    assert read_only.status_code == 403
    no_key = await gw.client.post(f"/processes/{pid}/events/paid", json={}, headers={"X-API-Key": ""})
    assert no_key.status_code == 401
    assert (await gw.client.get(f"/processes/{pid}")).json()["version"] == version  # nothing changed

    kept = await gw.client.post(f"/processes/{pid}/events/shipped", json={"data": {"box": 1}})
    assert kept.status_code == 202 and kept.json()["resumed"] is False
    sent = await gw.client.post("/cases/await_payment/keys/order-7/events/paid",
                                json={"data": {"amount": 5}, "event_id": "pay-7"})
    assert sent.status_code == 202, sent.text
    assert sent.json()["resumed"] is True and sent.json()["event_id"] == "pay-7"
    twice = await gw.client.post(f"/processes/{pid}/events/paid", json={"data": {"amount": 6}, "event_id": "pay-7"})
    assert twice.status_code == 200 and twice.json()["duplicate"] is True

    done = await view_when(gw, pid, lambda v: v["status"] == "completed")
    assert done["result"] == {"event": {"amount": 5}, "event_id": "pay-7", "attempt": 1}
    by_key = await gw.client.get("/cases/await_payment/keys/order-7", headers={"X-API-Key": READ_KEY})
    assert by_key.status_code == 200 and by_key.json()["process_id"] == pid
    assert {e["name"]: e["consumed"] is not None for e in by_key.json()["events"]} == {"shipped": False, "paid": True}
    assert (await gw.client.get("/cases/await_payment/keys/nope")).status_code == 404
    finished = await gw.client.post(f"/processes/{pid}/events/paid", json={"data": {}, "event_id": "pay-8"})
    assert finished.status_code == 409
    assert (await gw.client.get(f"/processes/{pid}")).json()["version"] == done["version"]


async def test_a_callback_token_completes_its_wait_once_without_an_api_key(gw: Gateway) -> None:
    pid = await start(gw, "confirmation", {})
    view = await view_when(gw, pid, waits_for_event)
    token = view["store"]["token"]
    anonymous = {"X-API-Key": ""}
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await gw.client.post(f"/callbacks/{forged}", json={"data": {}}, headers=anonymous)).status_code == 401
    assert (await gw.client.post("/callbacks/x", json={"data": {}}, headers=anonymous)).status_code == 401
    assert (await gw.client.post(f"/callbacks/{token}", json={"ok": "maybe"}, headers=anonymous)).status_code == 422
    assert (await gw.client.get(f"/processes/{pid}")).json()["version"] == view["version"]

    first = await gw.client.post(f"/callbacks/{token}", json={"data": {"tracking": "T-1"}}, headers=anonymous)
    assert first.status_code == 202, first.text
    second = await gw.client.post(f"/callbacks/{token}", json={"data": {"tracking": "T-2"}}, headers=anonymous)
    assert second.status_code == 409, second.text
    done = await view_when(gw, pid, lambda v: v["status"] == "completed")
    assert done["result"] == {"confirmed": {"tracking": "T-1"}}

    short = await start(gw, "confirmation", {"timeout_s": 1})
    token = (await view_when(gw, short, waits_for_event))["store"]["token"]
    expired = await view_when(gw, short, lambda v: v["status"] == "completed")
    assert expired["result"]["rejected"] == "no event 'confirmed' within 1 s"
    late = await gw.client.post(f"/callbacks/{token}", json={"data": {}}, headers=anonymous)
    assert late.status_code == 410 and (await gw.client.get(f"/processes/{short}")).json()["version"] == expired[
        "version"]

    failing = await start(gw, "confirmation", {})
    token = (await view_when(gw, failing, waits_for_event))["store"]["token"]
    refused = await gw.client.post(f"/callbacks/{token}", json={"ok": False, "data": {"why": "no stock"}},
                                   headers=anonymous)
    assert refused.status_code == 202
    rejected = await view_when(gw, failing, lambda v: v["status"] == "completed")
    assert "reported a failure: {'why': 'no stock'}" in rejected["result"]["rejected"]


async def test_cancel_cascades_to_running_children_and_pending_items(gw: Gateway) -> None:
    parent = await start(gw, "holders", {"children": 6, "window": 3})
    view = await view_when(gw, parent, lambda v: (v.get("fan_out") or {}).get("in_flight") == 3)
    children = [i["child_process_id"] for i in (await gw.client.get(f"/processes/{parent}/items")).json()["items"]]
    for child in children[:3]:
        assert waits_for_event(await view_when(gw, child, waits_for_event))
    cancelled = await gw.client.post(f"/processes/{parent}/cancel", json={"reason": "order withdrawn"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for child in children[:3]:
        child_view = (await gw.client.get(f"/processes/{child}")).json()
        assert child_view["status"] == "cancelled"
        assert child_view["error"]["reason"] == f"parent process {parent} cancelled: order withdrawn"
    counts = {"group": view["version"], "total": 6, "succeeded": 0, "failed": 0, "in_flight": 0, "pending": 0,
              "cancelled": 6, "decided": "cancelled"}
    page = (await gw.client.get(f"/processes/{parent}/items", params={"group": view["version"]})).json()
    assert [i["status"] for i in page["items"]] == ["cancelled"] * 6
    assert page["fan_out"] == counts  # the counters were updated with the items: none in flight or pending
    await asyncio.sleep(1.0)  # the children's ends reach the parent's items: they stay cancelled, none starts
    page = (await gw.client.get(f"/processes/{parent}/items", params={"group": view["version"]})).json()
    assert [i["status"] for i in page["items"]] == ["cancelled"] * 6 and page["fan_out"] == counts
    for child in children[3:]:
        assert (await gw.client.get(f"/processes/{child}")).status_code == 404  # never started


async def test_lists_filter_on_search_attributes_and_refuse_bad_filters(gw: Gateway) -> None:
    ids = {}
    for n, (customer, total, vip) in enumerate((("C-9", 10.5, True), ("C-9", 20.0, False), ("C-8", 10.5, True))):
        ids[n] = await start(gw, "tagged", {"customer_id": customer, "order_total": total, "vip": vip})
    for pid in ids.values():
        await view_when(gw, pid, waits_for_event)
    queries = {("customer_id=C-9",): {ids[0], ids[1]}, ("customer_id=C-9", "vip=true"): {ids[0]},
               ("order_total=10.5",): {ids[0], ids[2]}, ("customer_id=C-7",): set()}
    for search, expected in queries.items():
        response = await gw.client.get("/processes", params={"case": "tagged", "search": list(search)})
        assert response.status_code == 200, response.text
        assert {i["process_id"] for i in response.json()["items"]} == expected, search
    for params in ({"search": "customer_id=C-9"}, {"case": "tagged", "search": "items=many"},
                   {"case": "tagged", "search": "nope=1"}, {"case": "tagged", "search": "no-equals"}):
        response = await gw.client.get("/processes", params=params)
        assert response.status_code == 422, (params, response.text)
    view = (await gw.client.get(f"/processes/{ids[0]}")).json()
    assert view["search"] == {"customer_id": "C-9", "order_total": 10.5, "vip": True, "items": 1}
