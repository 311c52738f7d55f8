"""The execution graph on the admin page, in Chromium: the graph_demo blueprint (tests/support/blueprints) on a
real gateway, PostgreSQL + RabbitMQ, a worker and the `effects` service as subprocesses. A finished process that
took the condition's default branch, its parallel steps and its fan-out shows its path highlighted, the branch it
did not take plain, and the end marked as where it is; the case's own graph shows no path.
Set ``STAGEFLOW_UPDATE_SCREENSHOT=1`` to refresh docs/admin-graph.png (the README's picture) from this run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from framework import Settings
from tests.support.cluster import CASE_MODULES, Cluster
from tests.support.gateway import with_keys
from tests.test_admin_ui import api, live_gateway, logged_in_page, require_chromium, start, store_of

pytestmark = pytest.mark.integration
__all__ = ["api", "live_gateway"]  # fixtures used here, defined in test_admin_ui

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = str(ROOT / "tests" / "support" / "blueprints" / "graph_demo.yaml")
SCREENSHOT = ROOT / "docs" / "admin-graph.png"
NODES = 12  # start, 8 steps, the parallel fork, the fan-out's items, the end


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    return with_keys(settings, cases=CASE_MODULES.split(","), blueprints=[BLUEPRINT])


async def finished(api: httpx.AsyncClient, process_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        view = (await api.get(f"/processes/{process_id}")).json()
        if view.get("status") in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.2)


async def test_a_finished_blueprint_process_shows_its_path_on_its_graph(
    cluster_settings: Settings, live_gateway: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    require_chromium()
    from playwright.async_api import expect

    cluster = Cluster(cluster_settings, tmp_path, workers=1, services_modules=("tests.support.services",),
                      STAGEFLOW_BLUEPRINTS=BLUEPRINT)
    await cluster.start()
    try:
        small = await start(api, "graph_demo", {"ref": "ui-small", "amount": 5, "lines": [4, 5, 6]})
        big = await start(api, "graph_demo", {"ref": "ui-big", "amount": 500})
        assert (await finished(api, small))["status"] == "completed"
        assert (await finished(api, big))["status"] == "completed"
        async with store_of(cluster_settings) as store:
            history = await store.history(small)
        assert [e.get("to") for e in history if e.get("stage") == "classify"] == ["quick"]  # the default branch

        async with logged_in_page(live_gateway) as (page, problems):
            await page.click(f'#rows tr[data-id="{small}"]')
            graph = page.locator("#d-graph svg.graph:not(.mini)")  # not the legend's swatches
            await expect(graph).to_have_attribute("data-current", "@end")
            await expect(graph.locator(".gnode")).to_have_count(NODES)
            for node in ("classify", "quick", "parallel_tell_a", "tell_a", "tell_b", "each_line", "finish"):
                visited = f"gnode k-{_kind(node)} visited"
                await expect(graph.locator(f'.gnode[data-node="{node}"]')).to_have_class(visited)
            await expect(graph.locator('.gnode[data-node="review"]')).to_have_class("gnode k-call")  # not taken
            await expect(graph.locator('.gnode[data-node="review"] text.name')).to_have_text("review")
            taken = graph.locator("path.gedge.taken")
            await expect(taken.and_(page.locator('[data-from="classify"][data-to="quick"]'))).to_have_count(1)
            await expect(page.locator('#d-graph path[data-from="classify"][data-to="review"]')).not_to_have_class(
                "gedge e-branch taken")
            await expect(taken.and_(page.locator('[data-from="each_line@items"][data-to="finish"]'))).to_have_count(1)
            assert await taken.count() == 10  # start→classify→quick→fork→2 steps→2 joins→items→finish→end
            current = graph.locator('.gnode.current[data-node="@end"]')
            await expect(current.locator("rect.ring")).to_have_count(1)
            await expect(graph.locator(".gnode.current")).to_have_count(1)
            await expect(page.locator("#d-graph .graph-legend")).to_contain_text("path taken")
            await expect(page.locator("#d-graph .graph-legend")).to_contain_text("branch (condition)")

            await page.locator("#d-graph").scroll_into_view_if_needed()
            await page.locator("#detail").screenshot(path=str(tmp_path / "admin-graph.png"))
            if os.environ.get("STAGEFLOW_UPDATE_SCREENSHOT"):
                SCREENSHOT.write_bytes((tmp_path / "admin-graph.png").read_bytes())

            # the other process took the branch: its graph shows that one
            await page.click(f'#rows tr[data-id="{big}"]')
            await expect(page.locator('#d-graph path.taken[data-from="classify"][data-to="review"]')).to_have_count(1)
            await expect(page.locator('#d-graph .gnode[data-node="quick"]')).to_have_class("gnode k-transform")

            # the case's own graph: the same nodes, no path, no marker
            await page.select_option("#f-case", "graph_demo")
            await page.click("#f-graph")
            case_graph = page.locator("#cg-graph svg.graph:not(.mini)")
            await expect(case_graph.locator(".gnode")).to_have_count(NODES)
            await expect(page.locator("#cg-title")).to_contain_text("graph_demo v1")
            assert await case_graph.locator(".gnode.visited, .gnode.current, path.taken").count() == 0
            assert not problems, problems
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())


def _kind(node: str) -> str:
    return {"classify": "condition", "quick": "transform", "parallel_tell_a": "parallel", "tell_a": "call",
            "tell_b": "call", "each_line": "fan_out", "finish": "complete"}[node]
