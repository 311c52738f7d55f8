"""Blueprints end to end on RabbitMQ + PostgreSQL: worker subprocesses (hosting the HTTP adapter) call a
real local HTTP server; data is mapped between steps; retried calls carry one idempotency key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from business_cases.blueprint_functions import FUNCTIONS
from business_cases.local_http import serve
from business_cases.shop_api import ShopApi
from framework import Settings, Stageflow, Status
from framework.blueprint import load_blueprints
from tests.support.cluster import Cluster, wait_finished

pytestmark = pytest.mark.integration

BLUEPRINTS = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints"
TOKEN = "e2e-shop-token"


@pytest.fixture
def shop() -> Iterator[tuple[ShopApi, str]]:
    api = ShopApi(token=TOKEN, lead_time_s=0.3)
    with serve(api.app()) as url:
        yield api, url


@pytest.fixture
def constants(shop: tuple[ShopApi, str]) -> dict[str, object]:
    url = shop[1]
    return {"shop_api": url, "supplier_api": url, "catalog_api": url, "settle_s": 0.2}


@pytest.fixture
async def flow(settings: Settings, constants: dict[str, object]) -> AsyncIterator[Stageflow]:
    cases = load_blueprints([str(BLUEPRINTS / "*.yaml")], functions=FUNCTIONS, constants=constants)
    async with Stageflow.from_settings(settings, cases=cases) as flow:
        yield flow


@pytest.fixture
async def cluster(flow: Stageflow, settings: Settings, constants: dict[str, object], tmp_path: Path
                  ) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        settings, tmp_path, workers=2, services_modules=(), cases="business_cases",
        STAGEFLOW_BLUEPRINTS=str(BLUEPRINTS / "*.yaml"),
        STAGEFLOW_BLUEPRINT_FUNCTIONS="business_cases.blueprint_functions",
        STAGEFLOW_BLUEPRINT_CONSTANTS=json.dumps(constants),
        STAGEFLOW_HTTP_SECRET_SHOP_AUTHORIZATION=f"Bearer {TOKEN}",
        STAGEFLOW_HTTP_ALLOW_NETWORKS="127.0.0.1",  # the shop listens on loopback, which is refused unless allowed
    )
    await cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"


async def test_order_blueprint_runs_end_to_end_with_data_mapped_between_steps(
    flow: Stageflow, cluster: Cluster, shop: tuple[ShopApi, str]
) -> None:
    api, _ = shop
    doc = await flow.start("ecommerce_order_blueprint", {"order_id": "BP-1", "desired_date": "2026-12-24"})
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
    assert done.status is Status.COMPLETED, (done.error, cluster.logs())
    job_id = done.result["job_id"]
    assert api.jobs == {job_id: {"order_id": "BP-1", "slot": done.store["slot"]}}  # body built from input + store
    assert done.result["slot"].startswith("2026-12-24T")  # kept from the schedule reply, used in the job request
    history = await flow.store.history(doc.process_id)
    assert [h["event"] for h in history] == ["started", "call", "next", "wait", "call", "next", "wait", "completed"]
    assert TOKEN not in json.dumps(done.public_view()) + json.dumps(history)  # the secret stayed in the worker
    assert [path for path, _ in api.calls] == ["/schedule", "/jobs"]


async def test_an_api_failing_twice_is_retried_with_the_same_idempotency_key(
    flow: Stageflow, cluster: Cluster, shop: tuple[ShopApi, str]
) -> None:
    api, _ = shop
    api.failures["/jobs"] = 2  # 503, 503, then the job is created
    doc = await flow.start("ecommerce_order_blueprint", {"order_id": "BP-2", "desired_date": "2026-12-24"})
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
    assert done.status is Status.COMPLETED, (done.error, cluster.logs())
    keys = [key for path, key in api.calls if path == "/jobs"]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith("sf-"), keys
    assert list(api.jobs) == [done.result["job_id"]]
    events = [h["event"] for h in await flow.store.history(doc.process_id)]
    assert events.count("retry") == 2 and events.count("resend") == 2


async def test_a_final_http_error_takes_the_on_failed_path(
    flow: Stageflow, cluster: Cluster, shop: tuple[ShopApi, str]
) -> None:
    api, _ = shop
    api.token = "rotated"  # the workers' secret no longer matches: 401 is not retried
    doc = await flow.start("ecommerce_order_blueprint", {"order_id": "BP-3", "desired_date": "2026-12-24"})
    [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
    assert done.status is Status.FAILED
    assert done.error.stage == "report_failure"
    assert done.error.reason.startswith("order BP-3 failed at create_job: service 'http' replied with an error: "
                                           "POST http://127.0.0.1:")
    assert "HTTP 401" in done.error.reason
    assert [path for path, _ in api.calls].count("/jobs") == 1


async def test_product_import_blueprint_with_its_optional_enrichment(
    flow: Stageflow, cluster: Cluster, shop: tuple[ShopApi, str]
) -> None:
    api, _ = shop
    api.failures["/enrich"] = 2  # both attempts of the optional step fail: the import goes on without it
    first = await flow.start("product_import_blueprint", {"feed": "monday"})
    [without] = await wait_finished(flow, [first.process_id], timeout_s=60)
    second = await flow.start("product_import_blueprint", {"feed": "tuesday"})
    [enriched] = await wait_finished(flow, [second.process_id], timeout_s=60)

    assert without.status is Status.COMPLETED, (without.error, cluster.logs())
    assert without.result == {"stored": 3, "rejected": [2, 3], "enriched": False}
    assert [f.stage for f in without.failures] == ["enrich"]
    assert enriched.result == {"stored": 3, "rejected": [2, 3], "enriched": True}
    assert api.catalog["tuesday"] == [
        {"sku": "ABC-001", "title": "Desk Lamp", "price": "25.99"},
        {"sku": "ABC-002", "title": "Office Chair", "price": "149.00"},
        {"sku": "ABC-004", "title": "Monitor Arm", "price": "45.00"},
    ]
