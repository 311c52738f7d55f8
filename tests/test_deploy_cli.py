"""``stageflow deploy status`` and ``stageflow deploy check`` as a user runs them: the CLI as a subprocess, on the
real PostgreSQL, with workers of two releases as real subprocesses on RabbitMQ (their heartbeats are the worker
registry). Also: the check's query is served by the live-process index (EXPLAIN ANALYZE on enough rows)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import orjson
import pytest

from framework import Settings
from framework.app import Stageflow
from framework.store.postgres import PostgresStore
from tests.conftest import settings_env
from tests.support import processes
from tests.support.deploy_cases import OrderV1, OrderV2
from tests.support.servers import STORE_URL

pytestmark = pytest.mark.integration

CASES = "tests.support.deploy_cases"
V1, V1_TRIMMED, V2 = f"{CASES}:OrderV1", f"{CASES}:OrderV1Trimmed", f"{CASES}:OrderV2"


def stageflow(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**settings_env(settings, **env), "PYTHONPATH": str(processes.ROOT)}
    return subprocess.run([sys.executable, "-m", "framework", *args], env=environment, cwd=processes.ROOT,
                          capture_output=True, text=True, timeout=60)


async def _wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_status_says_which_release_may_stop_and_check_refuses_a_release_that_drops_a_reachable_stage(
    settings: Settings, tmp_path: Path
) -> None:
    beat = {"STAGEFLOW_HEARTBEAT_S": "0.5"}
    blue = processes.worker(0, settings_env(settings, STAGEFLOW_CASES=V1, STAGEFLOW_RELEASE="blue", **beat), tmp_path)
    green = processes.worker(1, settings_env(settings, STAGEFLOW_CASES=f"{V1},{V2}", STAGEFLOW_RELEASE="green",
                                             **beat), tmp_path)
    blue.start()
    try:
        async with Stageflow.from_settings(settings, cases=[OrderV1]) as v1:
            ids = [(await v1.start("order", {"n": n})).process_id for n in range(3)]

            async def all_wait() -> bool:
                return all([(await v1.get(i)).waiting is not None for i in ids])

            await _wait_for(all_wait)  # blue ran reserve: each waits for "go", then charge
        green.start()
        async with Stageflow.from_settings(settings, cases=[OrderV2]) as v2:
            await v2.start("order", {"n": 9}, start_at=time.time() + 3600)  # a v2 process, waiting for its start
            await _wait_for(lambda: _releases(v2.store, 2))

        shown = stageflow(settings, "deploy", "status")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            "live processes: 4",
            "  order v1  charge  event  3",
            "  order v2  reserve  timer  1",
            "running releases: 2",
            "  blue  workers=1  carries order v1",
            "    may stop: every (case, version) with live processes is carried by another running release",
            "  green  workers=1  carries order v1, order v2",
            "    must keep running: 1 live process on order v2, which only it carries",
        ]
        as_json = orjson.loads(stageflow(settings, "deploy", "status", "--json").stdout)
        assert [(r["release"], r["may_stop"], r["only_it_carries"]) for r in as_json["releases"]] == [
            ("blue", True, []), ("green", False, [{"case": "order", "version": 2, "processes": 1}])]
        assert as_json["live"][0] == {"case": "order", "version": 1, "stage": "charge", "waiting": "event",
                                      "processes": 3}

        # the gate: v1 processes may still be resumed at reserve and charge
        trimmed = stageflow(settings, "deploy", "check", STAGEFLOW_CASES=f"{V1_TRIMMED},{V2}",
                            STAGEFLOW_RELEASE="trimmed")
        assert trimmed.returncode == 1, trimmed.stderr
        assert trimmed.stdout.splitlines() == [
            "missing: order v1 stage charge: 3 live processes can be resumed there (order v1 has no stage 'charge')",
            "refused: release trimmed lacks 1 (case, version, stage) that 3 of 4 live processes can be resumed at",
        ]
        only_v2 = stageflow(settings, "deploy", "check", STAGEFLOW_CASES=V2, STAGEFLOW_RELEASE="v2-only")
        assert only_v2.returncode == 1
        assert [line for line in only_v2.stdout.splitlines() if line.startswith("missing:")] == [
            f"missing: order v1 stage {s}: 3 live processes can be resumed there (order v1 is not registered)"
            for s in ("charge", "reserve")]
        kept = stageflow(settings, "deploy", "check", STAGEFLOW_CASES=f"{V1},{V2}")  # no label: the cases' hash
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert kept.stdout.startswith("ok: release cases-")
        assert kept.stdout.rstrip().endswith("carries every stage that 4 live processes (2 case versions) can be "
                                             "resumed at")

        assert green.stop() == 0  # SIGTERM: its row goes with it
        after = stageflow(settings, "deploy", "status").stdout.splitlines()
        assert after[3:] == [
            "running releases: 1",
            "  blue  workers=1  carries order v1",
            "    must keep running: 3 live processes on order v1, which only it carries",
            "no running release carries order v2 (1 live process)",
        ]
        blue.kill()  # no goodbye: gone after three of its 0.5 s heartbeats
        async with PostgresStore(STORE_URL, schema=settings.store_schema, min_size=1, max_size=2) as store:
            await _wait_for(lambda: _releases(store, 0), timeout_s=5)
        assert "running releases: 0" in stageflow(settings, "deploy", "status").stdout
    finally:
        for worker in (blue, green):
            worker.stop()


async def _releases(store: object, n: int) -> bool:
    assert isinstance(store, PostgresStore)
    return len({w.release for w in await store.running_workers(time.time())}) == n


async def test_the_check_reads_live_processes_through_the_live_process_index(settings: Settings) -> None:
    async with PostgresStore(STORE_URL, schema=settings.store_schema, min_size=1, max_size=2):
        pass  # migrated
    conn = await asyncpg.connect(STORE_URL)
    p = f"{settings.store_schema}."
    try:
        # 50,000 finished processes and 500 live ones, as this release writes them
        await conn.execute(f"""
            INSERT INTO {p}processes (process_id, case_name, status, version, doc, created_at, updated_at,
                                      case_version, stage, reach, derived_version)
            SELECT 'p' || n, 'order', CASE WHEN n % 100 = 0 THEN 'waiting' ELSE 'completed' END, 3, '{{}}', n, n,
                   1 + (n / 100) % 2, 'reserve', CASE WHEN n % 100 = 0 THEN 'charge reserve' END, 3
            FROM generate_series(1, 50000) AS n""")
        await conn.execute(f"ANALYZE {p}processes")
        async with PostgresStore(STORE_URL, schema=settings.store_schema, min_size=1, max_size=2) as store:
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN ANALYZE {store._deploy.live_reach}"))
            live = await store.live_reach()
    finally:
        await conn.close()
    assert "processes_live" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert [(g.version, g.reach, g.processes) for g in live] == [(1, "charge reserve", 250), (2, "charge reserve", 250)]
