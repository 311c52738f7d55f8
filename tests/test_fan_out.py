"""Fan-out / fan-in on the real RabbitMQ + PostgreSQL, with workers as subprocesses.

Witnesses the framework does not control: the ``effects`` service writes one row per applied command (no
unique key), and child processes are counted in the process table.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from framework import Settings, Stageflow, Status
from tests.support.cluster import Cluster, wait_finished
from tests.support.fanout_cases import CASES
from tests.support.gateway import open_gateway
from tests.support.ledger import queue_depth

pytestmark = pytest.mark.integration

FINISHED = {s.value for s in Status if s.finished}


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=CASES, connection_name="fan-out-test") as flow:
        yield flow


async def effects_per_step(pg: asyncpg.Connection, schema: str, process_id: str) -> dict[int, int]:
    rows = await pg.fetch(
        f"SELECT step, count(*) AS n FROM {schema}.effects WHERE process_id = $1 GROUP BY step", process_id
    )
    return {r["step"]: r["n"] for r in rows}


async def check_spread(flow: Stageflow, pg: asyncpg.Connection, schema: str, process_id: str, items: int,
                       children: int) -> None:
    """The parent completed with every result in order; every command and every child ran exactly once."""
    doc = await flow.get(process_id)
    assert doc.status is Status.COMPLETED, (doc.status, doc.error)
    assert doc.result["steps_in_order"] is True
    assert doc.result["commands"] == {"succeeded": items, "failed": 0}
    assert doc.result["children"] == [{"n": n, "squared": n * n} for n in range(children)]
    assert await effects_per_step(pg, schema, process_id) == {step: 1 for step in range(items)}
    child_rows = await pg.fetch(
        f"SELECT process_id, status FROM {schema}.processes WHERE doc->'parent'->>'process_id' = $1", process_id
    )
    assert len(child_rows) == children and {r["status"] for r in child_rows} <= {"completed"}
    doubled = await pg.fetchval(
        f"SELECT count(*) FROM (SELECT process_id FROM {schema}.effects WHERE process_id = ANY($1::text[])"
        " GROUP BY process_id HAVING count(*) <> 1) d",
        [r["process_id"] for r in child_rows],
    )
    assert doubled == 0, "a child's service call was applied more or less than once"


async def test_commands_and_child_processes_fan_out_and_join_in_order(
    settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    cluster = Cluster(settings, tmp_path, workers=2)
    try:
        async with open_gateway(settings) as gw:  # opening it creates the schema the services use
            await cluster.start()
            response = await gw.client.post("/cases/spread/processes",
                                            json={"input": {"items": 300, "children": 30, "max_in_flight": 40}})
            process_id = response.json()["process_id"]
            counts_seen = []
            while (view := (await gw.client.get(f"/processes/{process_id}")).json())["status"] not in FINISHED:
                if view.get("fan_out"):
                    counts_seen.append(view["fan_out"])
                await asyncio.sleep(0.05)
            await check_spread(gw.flow, pg, settings.store_schema, process_id, items=300, children=30)
            history = [e["event"] for e in view["history"]]
            assert history == ["started", "fan_out", "fan_out", "completed"]
            # Per-item status of the first fan-out (its group is the version it started at), a page at a time.
            page = (await gw.client.get(f"/processes/{process_id}/items", params={"group": 2, "limit": 100})).json()
            assert page["fan_out"] == {"group": 2, "total": 300, "succeeded": 300, "failed": 0, "in_flight": 0,
                                       "pending": 0, "cancelled": 0, "decided": "succeeded"}
            assert [i["index"] for i in page["items"]] == list(range(100)) and page["next_after"] == 99
            assert page["items"][7] == {**page["items"][7], "status": "done", "api": "effects",
                                        "result": {"step": 7, "ok": True}}
            children = (await gw.client.get(f"/processes/{process_id}/items")).json()  # the latest fan-out
            child = children["items"][3]
            assert child["case"] == "spread_child" and child["result"] == {"n": 3, "squared": 9}
            child_view = (await gw.client.get(f"/processes/{child['child_process_id']}")).json()
            assert child_view["parent"] == {"process_id": process_id, "case": "spread", "group": 3, "index": 3}
            missing = await gw.client.get(f"/processes/{process_id}/items", params={"group": 4})
            assert missing.status_code == 404 and "has no fan-out 4" in missing.json()["detail"]
    finally:
        codes = cluster.stop()
    assert counts_seen and all(c["total"] in (300, 30) for c in counts_seen), "no fan-out counts while it ran"
    assert all(code == 0 for code in codes.values()), codes


async def test_independent_steps_run_at_the_same_time(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    cluster = Cluster(settings, tmp_path, workers=2)
    await cluster.start()
    try:
        started = time.monotonic()
        doc = await flow.start("parallel", {})
        [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
        took = time.monotonic() - started
    finally:
        cluster.stop()
    assert done.status is Status.COMPLETED, done.error
    first, second = done.result["naps"]
    # The two steps overlapped: the second began before the first ended.
    assert max(first["began"], second["began"]) < min(first["ended"], second["ended"]), done.result
    assert took < 1.0 + 1.5, f"the steps ran one after the other ({took:.2f} s)"


@pytest.mark.fault
async def test_a_thousand_items_join_correctly_under_worker_sigkills(
    flow: Stageflow, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    items, children, kills = 1000, 50, 8
    rng = random.Random()
    cluster = Cluster(settings, tmp_path, workers=3, STAGEFLOW_RELAY_GRACE_S="1.0", STAGEFLOW_TIMER_INTERVAL_S="0.25")
    await cluster.start()
    try:
        doc = await flow.start("spread", {"items": items, "children": children, "max_in_flight": 100})
        killed = []
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 0.6))  # the fan-out takes a few seconds: land 3 kills or more
            current = await flow.get(doc.process_id)
            if current.status.finished:
                break
            victim = rng.choice(cluster.workers)
            await asyncio.to_thread(victim.kill)
            victim.start()
            killed.append(victim.name)
        [_finished] = await wait_finished(flow, [doc.process_id], timeout_s=180)
        await check_spread(flow, pg, settings.store_schema, doc.process_id, items=items, children=children)
        parked = await queue_depth(settings.broker_url, f"{settings.queue_prefix}.parked")
        print(f"\nFANOUT items={items} children={children} kills={len(killed)} parked={parked}")
    finally:
        cluster.stop()
    assert len(killed) >= 3, f"the fan-out finished before the kills landed: {killed}"
    assert parked == 0


async def test_ten_thousand_items_keep_the_document_and_every_message_small(
    flow: Stageflow, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    items = 10_000
    cluster = Cluster(settings, tmp_path, workers=2)
    await cluster.start()
    schema = settings.store_schema
    try:
        doc = await flow.start("spread", {"items": items, "max_in_flight": 200})
        largest_doc = 0
        while not (current := await flow.get(doc.process_id)).status.finished:
            size = await pg.fetchval(f"SELECT octet_length(doc::text) FROM {schema}.processes WHERE process_id = $1",
                                     doc.process_id)
            largest_doc = max(largest_doc, size)
            await asyncio.sleep(0.2)
        await check_spread(flow, pg, schema, doc.process_id, items=items, children=0)
        largest_item = await pg.fetchval(f"SELECT max(octet_length(spec::text)) FROM {schema}.fan_items")
        print(f"\nFANOUT10K items={items} largest_doc_bytes={largest_doc} largest_item_bytes={largest_item}")
    finally:
        cluster.stop()
    # The document holds the first window's messages, never the items: 200 commands of ~0.5 KB.
    assert largest_doc < 200 * 1024, largest_doc
    assert current.status is Status.COMPLETED


async def test_a_child_result_too_large_for_a_message_fails_its_item_and_the_parent_goes_on(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    # Before: the child's answer was over the message limit, so the parent's worker parked it; the sweep asked
    # the finished child again every relay grace, parked again, and the parent waited for ever.
    too_big = settings.max_message_bytes + 1000
    cluster = Cluster(settings, tmp_path, workers=2)
    await cluster.start()
    try:
        doc = await flow.start("bulky", {"sizes": [10, too_big], "tolerate": 1})
        [done] = await wait_finished(flow, [doc.process_id], timeout_s=20)
        parked = await queue_depth(settings.broker_url, f"{settings.queue_prefix}.parked")
    finally:
        cluster.stop()
    assert done.status is Status.COMPLETED, (done.status, done.waiting, done.error)
    assert done.result["lengths"] == [10, None]
    assert "over the" in done.result["errors"]["1"] and "message limit" in done.result["errors"]["1"]
    assert parked == 0


@pytest.mark.fault
async def test_a_poison_item_message_fails_its_item_once_instead_of_killing_a_worker_every_sweep(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    # Before: the parked start message left the item in flight, so the parent's sweep sent it again every relay
    # grace; each copy killed a worker (in the middle of other work), was parked, and the parent never joined.
    cluster = Cluster(settings, tmp_path, workers=2, STAGEFLOW_POISON_AFTER="2")
    await cluster.start()
    restarts = 0

    def restart_dead_workers() -> int:
        dead = [w for w in cluster.workers if not w.alive]
        for worker in dead:  # a supervisor would restart them; so do we
            worker.start()
        return len(dead)

    try:
        doc = await flow.start("touchy", {})
        deadline = time.monotonic() + 60
        while not (current := await flow.get(doc.process_id)).status.finished and time.monotonic() < deadline:
            restarts += restart_dead_workers()
            await asyncio.sleep(0.1)
        # A worker killed just before the parent finished may not have been seen dead yet: count it as such.
        await asyncio.sleep(1.0)
        restarts += restart_dead_workers()
        kills_while_running = restarts
        # Once the item failed, nothing sends the poison again: no worker dies over a few sweeps.
        calm_until = time.monotonic() + 4 * settings.relay_grace_s
        while time.monotonic() < calm_until:
            restarts += restart_dead_workers()
            await asyncio.sleep(0.1)
    finally:
        cluster.stop()
    assert current.status is Status.COMPLETED, (current.status, current.waiting, current.error, restarts)
    assert current.result["results"] == [None, "alive"]
    assert "poison message" in current.result["errors"]["0"]
    assert restarts == kills_while_running, f"the poison kept killing workers: {restarts - kills_while_running} more"
