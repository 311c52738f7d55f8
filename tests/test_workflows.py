"""Stored workflows over HTTP on RabbitMQ + PostgreSQL, with worker subprocesses that were running before the
workflow existed: created, started, changed while a process of the old version runs (both finish, each on its
version), deactivated (no new starts, running ones finish), and bad changes refused with every problem named."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework import Settings
from tests.conftest import settings_env
from tests.support.cluster import Cluster
from tests.support.gateway import READ_KEY, Gateway, open_gateway

pytestmark = pytest.mark.integration

HOLD = {"name": "hold", "kind": "wait_for_event", "event": "go", "timeout_s": 600}


def blueprint(result_version: int, *extra_steps: dict[str, Any], name: str = "refund") -> dict[str, Any]:
    return {"name": name, "input": {"amount": {"type": "integer", "min": 1}},
            "steps": [HOLD, *extra_steps, {"name": "done", "kind": "complete",
                                            "result": {"made_by": result_version, "amount": "${input.amount}"}}]}


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings.model_copy(update={"workflow_refresh_s": 0.3})) as gateway:
        yield gateway


@pytest.fixture
async def workers(settings: Settings, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(settings, tmp_path, workers=2, services_modules=(), STAGEFLOW_WORKFLOW_REFRESH_S="0.5")
    await cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"


async def wait_status(gw: Gateway, process_id: str, statuses: tuple[str, ...], timeout_s: float = 30) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body = (await gw.client.get(f"/processes/{process_id}")).json()
        if body["status"] in statuses:
            return body
        assert asyncio.get_running_loop().time() < deadline, f"still {body['status']}: {body}"
        await asyncio.sleep(0.1)


async def start(gw: Gateway, case: str, amount: int) -> str:
    response = await gw.client.post(f"/cases/{case}/processes", json={"input": {"amount": amount}})
    assert response.status_code == 201, response.text
    return response.json()["process_id"]


async def test_a_workflow_changed_while_a_process_runs_finishes_each_process_on_its_version(
    gw: Gateway, workers: Cluster
) -> None:
    created = await gw.client.post("/workflows", json={"definition": blueprint(1), "by": "ana"})
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["active"], created.json()["created_by"]) == (1, True, "ana")
    old = await start(gw, "refund", 10)
    assert (await wait_status(gw, old, ("waiting",)))["stage"] == "hold"  # the running workers picked it up

    audit = {"name": "audit", "kind": "wait", "seconds": 0.1}  # a stage version 1 does not have
    changed = await gw.client.put("/workflows/refund", json={"definition": blueprint(2, audit), "by": "bo"})
    assert changed.status_code == 200, changed.text
    assert [v["created_by"] for v in changed.json()["versions"]] == ["ana", "bo"]
    new = await start(gw, "refund", 20)
    await wait_status(gw, new, ("waiting",))

    for process_id in (old, new):
        sent = await gw.client.post(f"/processes/{process_id}/events/go", json={"data": {}})
        assert sent.status_code == 202, sent.text
    first, second = [await wait_status(gw, p, ("completed", "failed")) for p in (old, new)]
    assert second["status"] == "completed", second["error"]
    assert (first["status"], first["case_version"], first["result"]) == ("completed", 1, {"made_by": 1, "amount": 10})
    assert (second["status"], second["case_version"], second["result"]) == ("completed", 2,
                                                                           {"made_by": 2, "amount": 20})
    stages = [[h.get("to") for h in (await gw.client.get(f"/processes/{p}?history=true")).json().get("history", [])]
              for p in (old, new)]
    assert "audit" not in stages[0] and "audit" in stages[1], stages

    listed = (await gw.client.get("/workflows", headers={"X-API-Key": READ_KEY})).json()
    assert [(w["name"], w["latest"], w["updated_by"]) for w in listed] == [("refund", 2, "bo")]
    v1 = (await gw.client.get("/workflows/refund?version=1", headers={"X-API-Key": READ_KEY})).json()
    assert [s["name"] for s in v1["definition"]["steps"]] == ["hold", "done"]
    assert "message parked" not in workers.logs()  # the workers learnt each version in time, without a restart


async def test_a_deactivated_workflow_starts_nothing_and_its_running_process_finishes(
    gw: Gateway, workers: Cluster
) -> None:
    assert (await gw.client.post("/workflows", json={"definition": blueprint(1, name="payout")})).status_code == 201
    running = await start(gw, "payout", 5)
    await wait_status(gw, running, ("waiting",))
    off = await gw.client.post("/workflows/payout/deactivate", json={"by": "cy"})
    assert off.status_code == 200 and off.json()["active"] is False and off.json()["updated_by"] == "cy"
    before = await gw.process_count()
    refused = await gw.client.post("/cases/payout/processes", json={"input": {"amount": 1}})
    assert refused.status_code == 409 and "deactivated" in refused.json()["detail"], refused.text
    assert await gw.process_count() == before
    await gw.client.post(f"/processes/{running}/events/go", json={"data": {}})
    assert (await wait_status(gw, running, ("completed", "failed")))["status"] == "completed"
    assert (await gw.client.post("/workflows/payout/activate")).status_code == 200
    await start(gw, "payout", 2)


async def test_bad_changes_are_refused_with_every_problem_named_and_change_nothing(gw: Gateway) -> None:
    broken = {"name": "broken", "steps": [{"name": "a", "kind": "api_call", "request": {"url": "${stroe.x}"}},
                                          {"name": "a", "kind": "complete"}]}
    answer = await gw.client.post("/workflows", json={"definition": broken})
    assert answer.status_code == 422, answer.text
    messages = " ".join(e["message"] for e in answer.json()["errors"])
    assert "stroe" in messages and "duplicate" in messages.lower(), answer.json()
    check = await gw.client.post("/workflows/validate", json={"definition": broken})
    assert check.status_code == 200 and check.json()["valid"] is False and check.json()["errors"]
    assert (await gw.client.post("/workflows/validate", json={"definition": blueprint(1)})).json()["valid"] is True

    nul = blueprint(1, name="nul_case")
    nul["steps"][-1]["result"] = {"note": "a\x00b"}
    assert (await gw.client.post("/workflows", json={"definition": nul})).status_code == 422
    code_case = blueprint(1, name="ecommerce_order")  # a case in this deployment's code
    taken = await gw.client.post("/workflows", json={"definition": code_case})
    assert taken.status_code == 409 and "code" in taken.json()["detail"], taken.text
    assert (await gw.client.post("/workflows", json={"definition": blueprint(1, name="twice")})).status_code == 201
    again = await gw.client.post("/workflows", json={"definition": blueprint(1, name="twice")})
    assert again.status_code == 409 and "PUT /workflows/twice" in again.json()["hint"]
    renamed = await gw.client.put("/workflows/twice", json={"definition": blueprint(2, name="other")})
    assert renamed.status_code == 422, renamed.text
    assert (await gw.client.put("/workflows/nope", json={"definition": blueprint(1, name="nope")})).status_code == 404
    assert (await gw.client.get("/workflows/twice?version=9")).status_code == 404
    assert (await gw.client.post("/workflows/nope/deactivate")).status_code == 404
    assert (await gw.client.post("/workflows", json={"definition": "steps"})).status_code == 422
    reader = await gw.client.post("/workflows", json={"definition": blueprint(1, name="r")},
                                  headers={"X-API-Key": READ_KEY})
    assert reader.status_code == 403, reader.text
    assert [w["name"] for w in (await gw.client.get("/workflows")).json()] == ["twice"]


async def test_a_template_becomes_a_workflow_over_http(gw: Gateway) -> None:
    listed = (await gw.client.get("/templates", headers={"X-API-Key": READ_KEY})).json()
    assert {"order_processing", "product_import", "listing_creation", "inventory_sync"} <= {t["name"] for t in listed}
    made = await gw.client.post("/templates/product_import", json={
        "name": "acme_import", "by": "dee",
        "parameters": {"supplier_api": "https://feeds.example", "catalog_api": "https://catalog.example"}})
    assert made.status_code == 201, made.text
    assert made.json()["definition"]["constants"]["supplier_api"] == "https://feeds.example"
    cases = (await gw.client.get("/cases")).json()
    assert "acme_import" in {c["name"] for c in cases}
    bad = await gw.client.post("/templates/product_import", json={"parameters": {"max_in_flight": 0}})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} >= {"max_in_flight", "supplier_api"}
    assert (await gw.client.post("/templates/nope", json={})).status_code == 404


def test_the_cli_creates_changes_lists_and_deactivates_workflows(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings_env(settings, STAGEFLOW_CASES="tests.support.cases")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "framework", "workflow", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    first, second, broken = tmp_path / "v1.yaml", tmp_path / "v2.yaml", tmp_path / "broken.yaml"
    first.write_text(yaml.safe_dump(blueprint(1, name="cli_flow")))
    second.write_text(yaml.safe_dump(blueprint(2, {"name": "pause", "kind": "wait", "seconds": 1}, name="cli_flow")))
    broken.write_text(yaml.safe_dump({"name": "cli_broken", "steps": [{"name": "x", "kind": "nope"}]}))
    assert cli("validate", str(first)).returncode == 0
    invalid = cli("validate", str(broken))
    assert invalid.returncode == 1 and "steps[0]" in invalid.stderr, invalid.stderr
    made = cli("create", str(first), "--by", "eve")
    assert made.returncode == 0 and "version 1" in made.stdout, made.stderr
    assert cli("create", str(first)).returncode == 2  # taken
    assert "version 2" in cli("update", "cli_flow", str(second), "--by", "fay").stdout
    assert cli("deactivate", "cli_flow").returncode == 0
    listing = cli("list").stdout
    assert "cli_flow  v2  inactive" in listing and "by" in listing, listing
    shown = cli("show", "cli_flow", "--version", "1")
    assert shown.returncode == 0 and '"created_by": "eve"' in shown.stdout


async def test_a_stored_workflows_schedule_fires_on_workers_that_were_already_running(
    gw: Gateway, workers: Cluster
) -> None:
    definition = {"name": "heartbeat", "schedules": [{"name": "heartbeat-tick", "every_s": 1}],
                  "steps": [{"name": "done", "kind": "complete", "result": {"ok": True}}]}
    assert (await gw.client.post("/workflows", json={"definition": definition})).status_code == 201
    deadline = asyncio.get_running_loop().time() + 20
    while not (await gw.client.get("/processes?case=heartbeat&status=completed")).json()["items"]:
        assert asyncio.get_running_loop().time() < deadline, workers.logs()
        await asyncio.sleep(0.2)
    [schedule] = [s for s in (await gw.client.get("/schedules")).json() if s["name"] == "heartbeat-tick"]
    assert schedule["case"] == "heartbeat" and schedule["last_tick"] is not None
