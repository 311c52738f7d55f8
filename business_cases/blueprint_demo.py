"""The blueprint demo: e-commerce orders and a product import, written as blueprints, against local APIs.

Starts the stand-in APIs (``shop_api``) on a free local port, loads ``business_cases/blueprints/*.yaml``
with their URLs, and runs workers and the HTTP adapter in this process (on the embedded default, or on
the configured RabbitMQ and store). Prints a sample process and a summary line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from business_cases.blueprint_functions import FUNCTIONS
from business_cases.local_http import serve
from business_cases.shop_api import ShopApi
from framework.app import Stageflow
from framework.blueprint import load_blueprints
from framework.http import HttpAdapter
from framework.logs import configure_logging
from framework.service.inbox import StatelessInbox
from framework.service.sdk import Service
from framework.settings import Settings

BLUEPRINTS = Path(__file__).resolve().parent / "blueprints"


async def run_blueprint_demo(settings: Settings, *, count: int = 50, workers: int = 2,
                             timeout_s: float = 120.0) -> dict:
    configure_logging("WARNING")
    shop = ShopApi(lead_time_s=0.2)
    with tempfile.TemporaryDirectory(prefix="stageflow-bp-demo-") as tmp, serve(shop.app()) as url:
        if settings.embedded and settings.store_url == Settings.model_fields["store_url"].default:
            settings = settings.model_copy(update={"store_url": f"sqlite:///{os.path.join(tmp, 'demo.db')}"})
        constants = {"shop_api": url, "supplier_api": url, "catalog_api": url, "settle_s": 0.2}
        cases = load_blueprints([str(BLUEPRINTS / "*.yaml")], functions=FUNCTIONS, constants=constants)
        print(f"Stageflow blueprint demo: {count} orders and 1 product import against {url}", flush=True)
        async with Stageflow.from_settings(settings, cases=cases) as flow, \
                HttpAdapter(secrets={"SHOP_AUTHORIZATION": f"Bearer {shop.token}"}) as adapter:
            components = [flow.worker() for _ in range(max(1, workers))]
            components.append(Service("http", adapter.handle, broker=flow.broker, inbox=StatelessInbox()))
            for component in components:
                await component.start()
            try:
                return await _drive(flow, shop, count, timeout_s)
            finally:
                for component in components:
                    await component.stop()


async def _drive(flow: Stageflow, shop: ShopApi, count: int, timeout_s: float) -> dict:
    run_id = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    ids = [
        (await flow.start("ecommerce_order_blueprint", {"order_id": f"BP-{run_id}-{i:04d}", "desired_date": "2026-12-01"},
                          client_key=f"BP-{run_id}-{i:04d}")).process_id
        for i in range(count)
    ]
    ids.append((await flow.start("product_import_blueprint", {"feed": "daily"})).process_id)
    deadline = time.perf_counter() + timeout_s
    while True:
        docs = [await flow.get(pid) for pid in ids]
        if all(d.status.finished for d in docs) or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    orders, product_import = docs[:-1], docs[-1]
    summary = {
        "orders": count,
        "orders_completed": sum(d.status.value == "completed" for d in orders),
        "jobs_created": len(shop.jobs),
        "import": product_import.status.value,
        "imported": product_import.result,
        "http_requests": len(shop.calls),
        "seconds": round(elapsed, 2),
    }
    sample = orders[0]
    print(orjson.dumps({"sample_order": {"status": sample.status, "result": sample.result, "store": sample.store}},
                       option=orjson.OPT_INDENT_2).decode())
    print("summary: " + orjson.dumps(summary).decode(), flush=True)
    return summary
