"""The blueprint demo: e-commerce orders, a product import and a cron-started lead sync, written as blueprints,
against local APIs.

Starts the stand-in APIs (``shop_api``, ``crm_api``) on free local ports, loads the blueprints of
``business_cases/blueprints/`` with their URLs, and runs workers, the HTTP adapter and the lead sync's
``lead_writer`` service in this process (on the embedded default, or on the configured RabbitMQ and store).
Prints a sample order, what each lead sync did, and a summary line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from business_cases.blueprint_functions import FUNCTIONS
from business_cases.crm_api import CrmApi
from business_cases.lead_services import HANDLERS
from business_cases.lead_sync_demo import DEMO_SCHEDULE, demo_blueprint, lead_writer_inbox, watch_syncs
from business_cases.local_http import serve
from business_cases.shop_api import ShopApi
from framework.app import Stageflow
from framework.blueprint import load_blueprint, load_blueprints
from framework.http import HttpAdapter
from framework.logs import configure_logging
from framework.service.hosting import build_services
from framework.service.inbox import StatelessInbox
from framework.service.sdk import Service
from framework.settings import Settings

BLUEPRINTS = Path(__file__).resolve().parent / "blueprints"


async def run_blueprint_demo(settings: Settings, *, count: int = 50, workers: int = 2,
                             timeout_s: float = 120.0) -> dict:
    configure_logging("WARNING")
    shop, crm = ShopApi(lead_time_s=0.2), CrmApi(count=40, new_per_export=5)
    with tempfile.TemporaryDirectory(prefix="stageflow-bp-demo-") as tmp, serve(shop.app()) as url, \
            serve(crm.app()) as crm_url:
        if settings.embedded and settings.store_url == Settings.model_fields["store_url"].default:
            settings = settings.model_copy(update={"store_url": f"sqlite:///{os.path.join(tmp, 'demo.db')}"})
        constants = {"shop_api": url, "supplier_api": url, "catalog_api": url, "settle_s": 0.2, "crm_api": crm_url}
        cases = load_blueprints([str(BLUEPRINTS / f) for f in ("ecommerce_order.yaml", "product_import.yaml")],
                                functions=FUNCTIONS, constants=constants)
        lead_sync = load_blueprint(demo_blueprint(), constants=constants)
        print(f"Stageflow blueprint demo: {count} orders and 1 product import against {url}, lead syncs every 2 s "
              f"against {crm_url}", flush=True)
        secrets = {"SHOP_AUTHORIZATION": f"Bearer {shop.token}", "CRM_AUTHORIZATION": f"Bearer {crm.token}"}
        async with Stageflow.from_settings(settings, cases=[*cases, lead_sync]) as flow, \
                HttpAdapter(signer=flow.engine.signer, secrets=secrets, allow_networks=["127.0.0.1"]) as adapter, \
                lead_writer_inbox(settings, tmp) as inbox:  # the stand-in APIs are on 127.0.0.1: allowed here
            components: list[Any] = [flow.worker() for _ in range(max(1, workers))]
            components.append(Service("http", adapter.handle, broker=flow.broker, inbox=StatelessInbox(),
                                      signer=flow.engine.signer))
            components += build_services(HANDLERS, broker=flow.broker, inbox=inbox)
            since = time.time()
            for component in components:
                await component.start()
            # A row paused by an earlier demo on this store stays paused when the workers sync it: resume it.
            await flow.schedules.resume(DEMO_SCHEDULE["name"])
            try:
                summary = await _drive(flow, shop, count, timeout_s)
                leads = await watch_syncs(flow, inbox, lead_sync, since=since, timeout_s=timeout_s)
            finally:
                for component in components:
                    await component.stop()
    return _report(summary, leads)


def _report(summary: dict, leads: dict) -> dict:
    for sync in leads["syncs"]:
        print(f"lead sync at {sync['tick']}: {sync['status']}, export {sync.get('export_id')}: "
              f"{sync.get('fetched')} leads fetched, {sync.get('written')} written (one task each), "
              f"malformed set aside: {sync.get('rejected')}")
    print(f"leads table: {leads['leads_in_table']} leads; lead_writes: {leads['lead_writes']} rows, "
          f"{leads['doubled_writes']} written twice")
    summary.update(lead_syncs=len(leads["syncs"]), leads_in_table=leads["leads_in_table"],
                   lead_writes=leads["lead_writes"], doubled_writes=leads["doubled_writes"])
    print("summary: " + orjson.dumps(summary).decode(), flush=True)
    return summary


async def _drive(flow: Stageflow, shop: ShopApi, count: int, timeout_s: float) -> dict:
    run_id = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    ids = [
        (await flow.start("ecommerce_order_blueprint",
                          {"order_id": f"BP-{run_id}-{i:04d}", "desired_date": "2026-12-01"},
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
    return summary
