"""Pending approvals on the admin page, in Chromium: an approval blueprint (business_cases/blueprints/
discount_approval.yaml) on a real gateway, PostgreSQL + RabbitMQ and worker subprocesses; an operator approves
one process and rejects another, with comments, and each takes its path (checked in the store too)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from framework import Settings
from tests.support.cluster import CASE_MODULES, Cluster
from tests.support.gateway import with_keys
from tests.test_admin_ui import admin_page, api, live_gateway, require_chromium, start, store_of

pytestmark = pytest.mark.integration
__all__ = ["api", "live_gateway"]  # fixtures used here, defined in test_admin_ui

BLUEPRINT = str(Path(__file__).resolve().parents[1] / "business_cases" / "blueprints" / "discount_approval.yaml")


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    return with_keys(settings, cases=CASE_MODULES.split(","), blueprints=[BLUEPRINT])


async def test_pending_approvals_are_approved_and_rejected_from_the_admin_page(
    cluster_settings: Settings, live_gateway: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    require_chromium()
    from playwright.async_api import expect

    cluster = Cluster(cluster_settings, tmp_path, workers=1, services_modules=(), STAGEFLOW_BLUEPRINTS=BLUEPRINT)
    await cluster.start()
    try:
        approved_id = await start(api, "discount_approval", {"customer": "ACME", "percent": 10})
        rejected_id = await start(api, "discount_approval", {"customer": "Globex", "percent": 40})
        async with admin_page(live_gateway) as (page, problems):
            approve_row = page.locator(f'#approvals [data-approval="{approved_id}"]')
            reject_row = page.locator(f'#approvals [data-approval="{rejected_id}"]')
            await expect(approve_row).to_contain_text("discount_approval: manager")
            await expect(reject_row).to_be_visible()
            await expect(page.locator(f'#rows tr[data-id="{approved_id}"]')).to_contain_text("approval of manager")

            await approve_row.locator("input.comment").fill("fine for ACME")
            await page.wait_for_timeout(2500)  # a refresh passes: the typed comment must survive it
            await approve_row.get_by_role("button", name="Approve").click()
            await expect(page.locator("#banner")).to_contain_text(f"Approved: {approved_id}")
            await expect(approve_row).to_have_count(0)
            await reject_row.locator("input.comment").fill("40 % is too much")
            await reject_row.get_by_role("button", name="Reject").click()
            await expect(reject_row).to_have_count(0)
            await expect(page.locator("#approvals")).to_be_hidden()
            await expect(page.locator(f'#rows tr[data-id="{rejected_id}"]')).to_have_attribute(
                "data-status", "completed")
            assert not problems, problems

        accepted = await api.post(f"/processes/{approved_id}/events/offer_accepted", json={"data": {"at": "today"}})
        assert accepted.status_code == 202, accepted.text
        for _ in range(100):
            view = (await api.get(f"/processes/{approved_id}")).json()
            if view["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        async with store_of(cluster_settings) as store:
            approved, rejected = await store.load(approved_id), await store.load(rejected_id)
        assert approved is not None and approved.result == {
            "percent": 10, "approved_by": None, "comment": "fine for ACME", "accepted_at": "today"}
        assert rejected is not None and rejected.result == {"refused": "40 % is too much"}
        late = await api.post(f"/processes/{rejected_id}/approval", json={"approved": True})
        assert late.status_code == 409  # decided and finished: changes nothing
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())
