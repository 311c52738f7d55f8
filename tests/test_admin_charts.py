"""The admin page's charts of the last hour in a real chromium: a real gateway on RabbitMQ + PostgreSQL, a
worker subprocess completing and failing processes, and the page's SVG saying what /stats says.
``STAGEFLOW_UPDATE_SCREENSHOT=1`` refreshes docs/admin-stats.png (the README's picture)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from framework import Settings
from tests.support.cluster import Cluster
from tests.test_admin_ui import (  # noqa: F401 - api, cluster_settings and live_gateway are fixtures
    TIMEOUT_MS,
    api,
    cluster_settings,
    live_gateway,
    logged_in_page,
    require_chromium,
    start,
)

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "admin-stats.png"


async def test_the_admin_page_charts_the_last_hour_per_case(
    cluster_settings: Settings, live_gateway: str, api: httpx.AsyncClient, tmp_path: Path  # noqa: F811
) -> None:
    require_chromium()
    from playwright.async_api import expect

    assert (await api.get("/admin/static/charts.js", headers={"X-API-Key": ""})).status_code == 200
    cluster = Cluster(cluster_settings, tmp_path, workers=1)
    await cluster.start()
    try:
        for _ in range(3):
            await start(api, "flaky", {"succeed_on": 1})
        for _ in range(2):
            await start(api, "flaky", {"succeed_on": 1, "fatal": True})
        await start(api, "jumper", {"word": "charts"})
        async with logged_in_page(live_gateway) as (page, problems):
            flaky = page.locator('#charts .case-card[data-case="flaky"]')
            await expect(flaky).to_have_attribute("data-failed", "2", timeout=TIMEOUT_MS)
            await expect(flaky).to_have_attribute("data-completed", "3", timeout=TIMEOUT_MS)
            await expect(flaky.locator("svg.throughput")).to_have_attribute("data-total", "5")
            await expect(flaky.locator("svg.throughput rect")).to_have_count(60)
            await expect(flaky.locator('svg.failures rect[data-stage="flaky"]')).to_have_attribute(
                "data-count", "2")
            await expect(flaky.locator("svg.durations rect")).to_have_count(3)
            await expect(flaky).to_contain_text("3 done · 2 failed")
            jumper = page.locator('#charts .case-card[data-case="jumper"]')
            await expect(jumper).to_have_attribute("data-completed", "1", timeout=TIMEOUT_MS)
            await expect(jumper.locator("svg.failures")).to_contain_text("no failure")

            stats = (await api.get("/stats")).json()["last_hour"]["cases"]["flaky"]
            p99 = await flaky.locator('svg.durations rect[data-p="p99"]').get_attribute("data-s")
            assert float(p99 or "nan") == stats["duration_s"]["p99"]  # the chart is /stats' figure
            await page.locator("#charts").screenshot(path=str(tmp_path / "admin-stats.png"))
            if os.environ.get("STAGEFLOW_UPDATE_SCREENSHOT"):
                SCREENSHOT.write_bytes((tmp_path / "admin-stats.png").read_bytes())
            assert problems == []
    finally:
        cluster.stop()
