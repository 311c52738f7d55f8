"""Schedules on real RabbitMQ + PostgreSQL with three worker subprocesses: one process per tick, pause and
resume over HTTP and the CLI, missed ticks after a downtime (skip vs catch_up)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from framework import Settings
from tests.conftest import settings_env
from tests.support.cluster import Cluster
from tests.support.gateway import READ_KEY, open_gateway
from tests.support.processes import ROOT
from tests.support.schedule_cases import DAY_S

pytestmark = pytest.mark.integration

CASES_MODULE = "tests.support.schedule_cases"


def _cluster(settings: Settings, tmp_path: Path) -> Cluster:
    return Cluster(settings, tmp_path, workers=3, services_modules=(), cases=CASES_MODULE)


async def _ticks(pg: asyncpg.Connection, schema: str, case: str) -> list[float]:
    """The tick of every process of ``case``, read back from its client key (one entry per process)."""
    keys = await pg.fetch(f"SELECT client_key FROM {schema}.processes WHERE case_name = $1", case)
    return sorted(_tick_of(r["client_key"]) for r in keys)


def _tick_of(client_key: str) -> float:
    prefix, _name, iso = client_key.split(":", 2)
    assert prefix == "schedule", client_key
    return datetime.fromisoformat(iso).timestamp()


def _assert_one_per_tick(ticks: list[float], every_s: int = 1) -> None:
    """Each tick has exactly one process, and the ticks are consecutive: none doubled, none skipped."""
    assert ticks, "no process was started"
    per_tick = Counter(math.floor(t / every_s) for t in ticks)  # a tick whose key varied still counts once
    doubled = {t * every_s: n for t, n in per_tick.items() if n > 1}
    assert not doubled, f"ticks with more than one process: {doubled}"
    first, last = min(per_tick), max(per_tick)
    assert sorted(per_tick) == list(range(first, last + 1)), "ticks were skipped"


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings, STAGEFLOW_CASES=CASES_MODULE), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "framework", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


async def test_one_process_per_tick_with_three_workers_pause_and_resume(
    settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    cluster = _cluster(settings, tmp_path)
    await cluster.start()
    try:
        await asyncio.sleep(6)
        running = await _ticks(pg, schema, "ticked")
        assert len(running) >= 4, cluster.logs()
        _assert_one_per_tick(running)
        cron_ticks = await _ticks(pg, schema, "cron_ticked")
        assert len(cron_ticks) >= 2, cluster.logs()
        _assert_one_per_tick(cron_ticks, every_s=2)
        cluster.workers[0].kill()  # SIGKILL, maybe between a start and its advance: the others go on
        await asyncio.sleep(3)
        _assert_one_per_tick(await _ticks(pg, schema, "ticked"))

        async with open_gateway(settings) as gw:
            listed = (await gw.client.get("/schedules", headers={"X-API-Key": READ_KEY})).json()
            assert {s["name"]: s["schedule"] for s in listed} == {
                "every-second": "every 1 s", "every-2-seconds": "cron '*/2 * * * * *' in Europe/Berlin",
                "daily-skip": "every 86400 s", "daily-catch-up": "every 86400 s"}
            refused = await gw.client.post("/schedules/every-second/pause", headers={"X-API-Key": READ_KEY})
            assert refused.status_code == 403
            assert (await gw.client.post("/schedules/nope/pause")).status_code == 404
            paused = await gw.client.post("/schedules/every-second/pause")
            assert paused.status_code == 200 and paused.json()["paused"] is True
            paused_at = time.time()

        await asyncio.sleep(1.5)  # a worker that read the row just before the pause may start one more tick
        at_pause = await _ticks(pg, schema, "ticked")
        assert max(at_pause) <= paused_at + 1
        await asyncio.sleep(3)
        assert await _ticks(pg, schema, "ticked") == at_pause, "a paused schedule fired"

        listed = _cli(settings, "schedules", "list")
        assert listed.returncode == 0, listed.stderr
        assert any(line.startswith("every-second  ticked  paused  every 1 s") for line in listed.stdout.splitlines())
        resumed = _cli(settings, "schedules", "resume", "every-second")
        assert resumed.returncode == 0 and "every-second  ticked  active" in resumed.stdout, resumed.stderr
        resumed_at = time.time()
        unknown = _cli(settings, "schedules", "pause", "nope")
        assert unknown.returncode == 2 and "no schedule 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr

        await asyncio.sleep(4)
        after = await _ticks(pg, schema, "ticked")
        new = [t for t in after if t not in at_pause]
        assert len(new) >= 3, cluster.logs()
        assert min(new) > resumed_at - 1, "ticks during the pause were fired (catch_up must not cover a pause)"
        _assert_one_per_tick(new)
        _assert_one_per_tick(await _ticks(pg, schema, "cron_ticked"), every_s=2)  # not paused: still ticking
        every_second, every_2 = await _ticks(pg, schema, "ticked"), await _ticks(pg, schema, "cron_ticked")
        print(f"SCHEDULES workers=3 killed=1 every_1s_processes={len(every_second)} "
              f"every_1s_distinct_ticks={len(set(every_second))} cron_2s_processes={len(every_2)} "
              f"cron_2s_distinct_ticks={len(set(every_2))} paused_s={resumed_at - paused_at:.1f}")
        statuses = await pg.fetch(f"SELECT DISTINCT status FROM {schema}.processes")
        assert {r["status"] for r in statuses} <= {"completed", "running"}
    finally:
        codes = cluster.stop()
    del codes["worker-0"]  # killed
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"


async def test_missed_ticks_after_a_downtime_follow_the_policy_and_pause_survives_a_restart(
    settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    cluster = _cluster(settings, tmp_path)
    await cluster.start()  # the workers write the schedule rows
    cluster.stop()
    await pg.execute(f"UPDATE {schema}.schedules SET paused = true WHERE name = 'every-second'")
    before_restart = await _ticks(pg, schema, "ticked")
    # Everything was down for 11 days: the rows' next tick is 11 days in the past.
    await pg.execute(f"UPDATE {schema}.schedules SET next_fire_at = next_fire_at - $1 WHERE name LIKE 'daily-%'",
                     11 * DAY_S)
    down_until = time.time()
    newest_tick = down_until // DAY_S * DAY_S

    cluster = _cluster(settings, tmp_path)
    await cluster.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(await _ticks(pg, schema, "daily_catch_up")) < 5:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # and nothing more comes
        assert await _ticks(pg, schema, "daily_skip") == [newest_tick], "skip fires the newest missed tick, once"
        assert await _ticks(pg, schema, "daily_catch_up") == [newest_tick - i * DAY_S for i in range(4, -1, -1)]
        assert await _ticks(pg, schema, "ticked") == before_restart, "the pause was lost when the workers restarted"
        rows = {r["name"]: r for r in await pg.fetch(f"SELECT * FROM {schema}.schedules")}
        assert rows["daily-skip"]["next_fire_at"] == rows["daily-catch-up"]["next_fire_at"] == newest_tick + DAY_S
        assert rows["every-second"]["paused"] is True
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{cluster.logs()}"
