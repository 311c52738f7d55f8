"""`stageflow demo --blueprints` runs both example blueprints against their stand-in APIs (embedded)."""

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
