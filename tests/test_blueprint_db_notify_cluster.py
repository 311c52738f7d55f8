"""db_query and notify steps end to end on RabbitMQ + PostgreSQL: a worker subprocess runs the restock example
blueprints, the ``dbquery`` and ``notify`` services run as subprocesses, an aiosmtpd server takes the email and
a local HTTP server the webhook.

Each service is SIGKILLed in the one window only its inbox closes: its test hook pauses it after an effect
committed and before the reply is published. The redelivered commands find the recorded replies, so the run
row is inserted once, the webhook is hit once, and each low-stock SKU (``output: multiple`` rows fanned out
into one child per row) is ordered once and mailed once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI, Request

from business_cases.local_http import serve
from framework import Settings, Stageflow, Status
from framework.blueprint import load_blueprint
from framework.store.base import ProcessFilter
from tests.support.cluster import Cluster, services_db_url, wait_finished
from tests.support.mail import smtp_server
from tests.support.processes import Managed

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints"
LOW = [f"SKU-{n}" for n in range(1, 7)]  # qty under the threshold; SKU-7 and SKU-8 are not


async def _tables(pg: asyncpg.Connection, schema: str) -> None:
    await pg.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await pg.execute(f"SET search_path = {schema}")
    # No unique keys on the effect tables on purpose: they are the witnesses that count how often it ran.
    await pg.execute("CREATE TABLE restock_runs (id serial PRIMARY KEY, run text NOT NULL, threshold int)")
    await pg.execute("CREATE TABLE restock_orders (id serial PRIMARY KEY, run_id int, sku text, qty int,"
                     " unit_price numeric(10,2))")
    await pg.execute("CREATE TABLE stock (sku text PRIMARY KEY, qty int, price numeric(10,2), updated_on date)")
    await pg.executemany("INSERT INTO stock VALUES ($1, $2, $3, '2026-03-01')",
                         [(f"SKU-{n}", n if n <= 6 else 50, f"{n}.25") for n in range(1, 9)])
    await pg.execute("RESET search_path")


def _noted(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _wait_file(path: Path, proc: Managed, timeout_s: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while not _noted(path).strip():
        assert time.monotonic() < deadline, f"{proc.name} never paused after a commit\n{proc.log_tail()}"
        assert proc.alive, proc.log_tail()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let other in-flight commands commit and pause too
    return _noted(path).split()


async def _kill_at_pause(proc: Managed, marker: Path, *, pause_again: Path | None) -> list[str]:
    """Wait until ``proc`` paused after a commit, SIGKILL it, restart it (pausing at ``pause_again`` or not)."""
    paused = await _wait_file(marker, proc)
    proc.kill()
    proc.env.pop("STAGEFLOW_TEST_PAUSE_AFTER_COMMIT", None)
    if pause_again is not None:
        proc.env["STAGEFLOW_TEST_PAUSE_AFTER_COMMIT"] = str(pause_again)
    proc.start()
    return paused


async def test_db_query_and_notify_effects_happen_once_under_service_sigkills(
    settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    hits: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hooks/restock")
    async def hook(request: Request) -> Any:
        hits.append({"key": request.headers.get("idempotency-key"), "body": await request.json()})
        return {"ok": True}

    alerts, order = EXAMPLES / "restock_alerts.yaml", EXAMPLES / "restock_order.yaml"
    with serve(app) as hooks_url, smtp_server() as (smtp_port, mailbox):
        constants = {"hooks_api": f"{hooks_url}/hooks"}
        cases = [load_blueprint(alerts, constants=constants), load_blueprint(order)]
        async with Stageflow.from_settings(settings, cases=cases) as flow:  # creates the schema first
            await _tables(pg, schema)
            db_url = services_db_url(settings)
            cluster = Cluster(
                settings, tmp_path, workers=1, services_modules=(), cases="",
                STAGEFLOW_BLUEPRINTS=f"{alerts},{order}", STAGEFLOW_BLUEPRINT_CONSTANTS=json.dumps(constants),
                STAGEFLOW_DB_SHOP=db_url, STAGEFLOW_NOTIFY_DB_URL=db_url, STAGEFLOW_SMTP_HOST="127.0.0.1",
                STAGEFLOW_SMTP_PORT=str(smtp_port), STAGEFLOW_SMTP_STARTTLS="false",
                STAGEFLOW_SMTP_FROM="shop@example.com", STAGEFLOW_LOG_LEVEL="INFO",
                STAGEFLOW_HTTP_ALLOW_NETWORKS="127.0.0.1",  # the webhook server is on loopback, refused unless allowed
            )
            markers = {name: tmp_path / f"{name}.paused" for name in ("db-1", "notify-1", "notify-2")}
            dbquery = Managed("dbquery", ["-m", "framework", "dbquery"],
                              {**cluster.env, "STAGEFLOW_TEST_PAUSE_AFTER_COMMIT": str(markers["db-1"])}, tmp_path)
            notify = Managed("notify", ["-m", "framework", "notify"],
                             {**cluster.env, "STAGEFLOW_TEST_PAUSE_AFTER_COMMIT": str(markers["notify-1"])}, tmp_path)
            cluster.services += [dbquery, notify]
            cluster.apis += ["dbquery.shop", "notify"]
            await cluster.start()
            try:
                started = await flow.start("restock_alerts", {"run": "R-1", "threshold": 7,
                                                              "buyer": "buyer@example.com"}, client_key="R-1")
                # 1. dbquery: the run's INSERT committed (with its inbox row), its reply never sent.
                paused_db = await _kill_at_pause(dbquery, markers["db-1"], pause_again=None)
                # 2. notify: the webhook was called and recorded; killed before the reply. Restarted to pause again,
                # 3. at the first email(s) of the fan-out's children.
                paused_hook = await _kill_at_pause(notify, markers["notify-1"], pause_again=markers["notify-2"])
                paused_mail = await _kill_at_pause(notify, markers["notify-2"], pause_again=None)
                [parent] = await wait_finished(flow, [started.process_id], timeout_s=120)
                children = await flow.store.find_ids(ProcessFilter(case="restock_order"))
                kids = await wait_finished(flow, children, timeout_s=60)
            finally:
                codes = cluster.stop()
            runs = await pg.fetch(f"SELECT id, run FROM {schema}.restock_runs")
            orders = await pg.fetch(f"SELECT sku, qty, unit_price FROM {schema}.restock_orders")
            logged = [line for line in notify.log_path.read_text().splitlines() if "restock ordered SKU-" in line]

    assert parent.status is Status.COMPLETED, (parent.status, parent.error, cluster.logs())
    assert parent.result == {"run_id": runs[0]["id"], "low": len(LOW), "ordered": len(LOW), "announced": 200}
    assert len(paused_db) >= 1 and len(paused_hook) == 1 and len(paused_mail) >= 1  # each kill hit a commit
    assert [r["run"] for r in runs] == ["R-1"]  # inserted once, though its command was delivered twice
    assert len(hits) == 1 and hits[0]["body"] == {"run": "R-1", "run_id": runs[0]["id"]}
    assert sorted(r["sku"] for r in orders) == LOW and {r["qty"] for r in orders} == {20}
    assert {r["sku"]: str(r["unit_price"]) for r in orders} == {s: f"{s[4:]}.25" for s in LOW}  # numeric in and out
    subjects = Counter(m["Subject"].split(":")[0] for m in mailbox.messages)
    assert subjects == Counter({f"Restock {s}": 1 for s in LOW}), subjects
    assert all(k.status is Status.COMPLETED for k in kids) and len(kids) == len(LOW)
    assert {k.result["message_id"] for k in kids} == {m["Message-ID"] for m in mailbox.messages}
    assert Counter(re.findall(r"restock ordered (SKU-\d+)", "\n".join(logged))) == Counter({s: 1 for s in LOW}), logged
    del codes["dbquery"], codes["notify"]  # both were restarted after kills: their last run stopped cleanly too
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"
    print(f"DBQUERY_NOTIFY kills=3 paused_db={len(paused_db)} paused_hook={len(paused_hook)} "
          f"paused_mail={len(paused_mail)} runs={len(runs)} orders={len(orders)} emails={len(mailbox.messages)} "
          f"webhook_hits={len(hits)}")
