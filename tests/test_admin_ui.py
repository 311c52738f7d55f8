"""The admin page in a real browser: a real gateway (uvicorn on a free port) on real PostgreSQL + RabbitMQ,
worker and service subprocesses, Debian's chromium driven by Playwright.

An operator enters the key, watches a process complete, opens a failed one, retries it with corrected
input and sees it complete; cancels a waiting process; reprocesses the failed ones of a case as a background
job and watches its progress bar; loads more of a long list. What the page shows is checked in the store too.
Without /usr/bin/chromium the test is skipped on a developer's machine, but
fails under CI (``CI`` set), where .ci/run installs chromium first.
Set ``STAGEFLOW_UPDATE_SCREENSHOT=1`` to refresh docs/admin.png (the README's picture) from this run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from framework import Settings
from framework.store.postgres import PostgresStore
from tests.support.cluster import CASE_MODULES, Cluster
from tests.support.gateway import OPERATE_KEY, with_keys

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "admin.png"


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing, and CI is set: the admin page must be tested in a browser here. "
                    "Install it first (`apt-get install -y chromium`; .ci/run does this when run as root).")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI runs this test")


@asynccontextmanager
async def store_of(settings: Settings) -> AsyncIterator[PostgresStore]:
    """The test's store, opened on its own: what the page shows must be what is stored."""
    store = PostgresStore(settings.store_url, schema=settings.store_schema, min_size=1, max_size=1)
    async with store:
        yield store


@asynccontextmanager
async def admin_page(live_gateway: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """Chromium on the admin page, logged in with the operate key; the list collects script errors and CSP
    violations (a failed request is not one: others may restart PostgreSQL or RabbitMQ meanwhile, and the page
    shows that and polls again)."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1480, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text else None)
            await page.goto(f"{live_gateway}/admin")
            await page.fill("#key", OPERATE_KEY)
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#main")).to_be_visible()
            yield page, problems
        finally:
            await browser.close()


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    return with_keys(settings, cases=CASE_MODULES.split(","))


@pytest.fixture
def live_gateway(cluster_settings: Settings) -> Iterator[str]:
    """The gateway app served by uvicorn in a thread, on a socket bound to a free port first (no race)."""
    import uvicorn

    from gateway.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings=cluster_settings), log_level="warning",
                                           lifespan="on", timeout_keep_alive=120))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
async def api(live_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_gateway, headers={"X-API-Key": OPERATE_KEY}, timeout=60) as client:
        yield client


async def start(api: httpx.AsyncClient, case: str, data: dict) -> str:
    """Start a process; others' fault tests may restart PostgreSQL or RabbitMQ meanwhile, so try again for a
    while on 503 or a dropped connection (with a client key, a second try never starts a second process)."""
    body = {"input": data, "client_key": f"admin-ui-{uuid.uuid4().hex}"}
    deadline = time.monotonic() + 60
    while True:
        try:
            response = await api.post(f"/cases/{case}/processes", json=body)
            if response.status_code != 503:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert response.status_code in (200, 201), response.text
    return response.json()["process_id"]


async def test_admin_page_shows_progress_and_retries_a_failed_process(
    cluster_settings: Settings, live_gateway: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    require_chromium()
    try:
        from playwright.async_api import expect
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (make install) installs it")

    # The page itself holds no data: no key needed, and a strict CSP.
    page_response = await api.get("/admin", headers={"X-API-Key": ""})
    assert page_response.status_code == 200 and "text/html" in page_response.headers["content-type"]
    assert "script-src 'self'" in page_response.headers["content-security-policy"]
    assert (await api.get("/admin/static/app.js", headers={"X-API-Key": ""})).status_code == 200
    assert (await api.get("/admin/static/..%2Fapp.py", headers={"X-API-Key": ""})).status_code == 404
    assert (await api.get("/stats", headers={"X-API-Key": ""})).status_code == 401  # the data still needs one

    cluster = Cluster(cluster_settings, tmp_path, workers=2,
                      services_modules=("tests.support.services", "business_cases.order_services"))
    await cluster.start()
    try:
        async with admin_page(live_gateway) as (page, problems):
            # a process moves to completed in the list by itself (the page polls)
            done_id = await start(api, "jumper", {"word": "hello"})
            row = page.locator(f'#rows tr[data-id="{done_id}"]')
            await expect(row).to_have_attribute("data-status", "completed", timeout=TIMEOUT_MS)
            await expect(row).to_contain_text("4/4")

            # some company for the picture: orders, a wait, a retry backoff, another failure
            for i in range(3):
                await start(api, "ecommerce_order", {"order_id": f"A-{i}", "desired_date": "2026-12-02"})
            waiter_id = await start(api, "waiter", {"until": time.time() + 3600})
            await start(api, "flaky", {"succeed_on": 3})
            await start(api, "five_calls", {"n": 7})
            failed_id = await start(api, "fixable", {"quantity": 0})

            failed_row = page.locator(f'#rows tr[data-id="{failed_id}"]')
            await expect(failed_row).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)
            await expect(failed_row).to_contain_text("quantity 0 is not positive")
            await expect(page.locator('#counts [data-status="failed"]')).to_contain_text("1")

            await failed_row.click()
            await expect(page.locator("#d-sub")).to_have_attribute("data-status", "failed")
            await expect(page.locator('#d-timeline li[data-stage="prepare"]')).to_have_class("step t-done")
            check = page.locator('#d-timeline li[data-stage="check"]')
            await expect(check).to_have_class("step t-failed")
            await expect(page.locator("#d-error")).to_contain_text("quantity 0 is not positive")

            await page.check("#r-edit")
            await page.fill("#r-input", '{"quantity": 5}')
            await page.click("#r-go")
            message = page.locator("#a-msg")
            await expect(message).to_be_visible()
            for _ in range(30):  # a 503 while others restart PostgreSQL: the operator clicks again
                if "retried" in (await message.text_content() or ""):
                    break
                await page.wait_for_timeout(2000)
                await page.click("#r-go")
            await expect(message).to_contain_text("retried")
            await expect(page.locator("#d-sub")).to_have_attribute("data-status", "completed",
                                                                     timeout=TIMEOUT_MS)
            await expect(check).to_have_class("step t-done")
            await expect(failed_row).to_have_attribute("data-status", "completed")
            await expect(page.locator("#d-result")).to_contain_text('"quantity": 5')
            await expect(page.locator("#d-history")).to_contain_text("retried")
            await expect(page.locator('#rows tr[data-status="waiting"]').first).to_be_visible()

            # cancel a waiting process: the button asks for a second click
            waiter_row = page.locator(f'#rows tr[data-id="{waiter_id}"]')
            await expect(waiter_row).to_have_attribute("data-status", "waiting")
            await waiter_row.click()
            await expect(page.locator("#d-sub")).to_have_attribute("data-status", "waiting")
            await page.click("#c-go")
            await expect(page.locator("#c-go")).to_contain_text("Click again")
            await page.click("#c-go")
            await expect(message).to_contain_text("cancelled")
            await expect(page.locator("#d-sub")).to_have_attribute("data-status", "cancelled")
            await expect(waiter_row).to_have_attribute("data-status", "cancelled")
            async with store_of(cluster_settings) as store:
                cancelled = await store.load(waiter_id)
                assert cancelled is not None and cancelled.status.value == "cancelled"
                assert cancelled.error.reason == "cancelled from the admin page"

            # bulk reprocess of the failed crashers: a background job with a progress bar
            crashers = [await start(api, "crasher", {}) for _ in range(3)]
            for crasher in crashers:
                crasher_row = page.locator(f'#rows tr[data-id="{crasher}"]')
                await expect(crasher_row).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)
            await page.select_option("#f-case", "crasher")
            await expect(page.locator("#rows tr[data-id]")).to_have_count(3)
            await page.click("#reprocess")
            await page.click("#reprocess")
            job = page.locator("#jobs .job").first
            await expect(job).to_contain_text("Reprocess case crasher")
            await expect(job).to_have_attribute("data-status", "completed", timeout=TIMEOUT_MS)
            await expect(job).to_contain_text("3/3 · retried 3")
            job_id = await job.get_attribute("data-id")
            async with store_of(cluster_settings) as store:
                stored = await store.load_job(job_id or "")
                assert stored is not None and (stored.status, stored.total, stored.done) == ("completed", 3, 3)
                for crasher in crashers:
                    assert [h["event"] for h in await store.history(crasher)].count("retried") == 1

            # "load more": with over 50 processes the list shows 50, then the older ones
            await page.select_option("#f-case", "")
            await expect(row).to_be_visible()
            await page.click(f'#rows tr[data-id="{crashers[0]}"]')  # the picture: a reprocessed one, open
            await expect(page.locator("#d-history")).to_contain_text("retried")
            await page.screenshot(path=str(tmp_path / "admin.png"))
            if os.environ.get("STAGEFLOW_UPDATE_SCREENSHOT"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                SCREENSHOT.write_bytes((tmp_path / "admin.png").read_bytes())
            for _ in range(45):
                await start(api, "waiter", {"until": time.time() + 3600})
            await expect(page.locator("#rows tr[data-id]")).to_have_count(50)
            await expect(page.locator("#more")).to_be_visible()
            await expect(row).to_have_count(0)  # the first process is the oldest: not on the first page
            await page.click("#more")
            await expect(row).to_have_attribute("data-status", "completed")
            assert await page.locator("#rows tr[data-id]").count() > 50
            await expect(page.locator("#more")).to_be_hidden()

            assert not problems, problems
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())
