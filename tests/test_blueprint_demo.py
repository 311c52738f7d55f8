"""`stageflow demo --blueprints` runs the example blueprints against their stand-in APIs (embedded): orders, a
product import, and two cron-started lead syncs that write each lead once."""

from __future__ import annotations

from pathlib import Path

from business_cases.blueprint_demo import run_blueprint_demo
from framework import Settings


async def test_blueprint_demo_completes_every_order_and_the_import(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'demo.db'}", timer_interval_s=0.1)
    summary = await run_blueprint_demo(settings, count=5, workers=2, timeout_s=60)
    assert summary["orders_completed"] == 5 and summary["jobs_created"] == 5
    assert summary["import"] == "completed"
    assert summary["imported"] == {"stored": 3, "rejected": [2, 3], "enriched": True}
    assert summary["http_requests"] == 5 * 2 + 3  # schedule + job per order; feed, enrich, catalog
    # The CRM starts with 40 leads and 5 sign up after each export; lead_writes has no unique key.
    syncs = summary["lead_syncs"]
    assert syncs >= 2 and summary["doubled_writes"] == 0
    assert summary["lead_writes"] == sum(40 + 5 * k for k in range(syncs))
    assert summary["leads_in_table"] == 40 + 5 * (syncs - 1)
