"""Statistics per case from the store: a worker subprocess on RabbitMQ + PostgreSQL completes and fails
processes, one process is left stuck, and /stats, `stageflow stats` and the pure summary say so."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from framework import Settings
from framework.statistics import WINDOW_S, case_statistics, table
from tests.conftest import settings_env
from tests.support.cluster import Cluster, wait_finished
from tests.support.gateway import open_gateway
from tests.support.processes import ROOT


async def stageflow(env: dict[str, str], *args: str) -> str:
    """Run the ``stageflow`` CLI; its standard output."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "framework", *args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return out.decode()


def test_case_statistics_percentiles_throughput_and_the_table() -> None:
    now = 60.0 * 1000 + 30  # half-way through minute 1000
    stats = case_statistics(
        now=now,
        finished=[("order", "completed", 1000, 3), ("order", "completed", 990, 2), ("order", "failed", 1000, 1),
                  ("order", "completed", 900, 7)],  # minute 900 is outside the hour: counted, not charted
        durations=[("order", float(s)) for s in range(1, 101)], failures=[("order", "charge", 1)],
        stuck=[("refund", 4)],
    )
    order = stats["cases"]["order"]
    assert (order["completed"], order["failed"], order["cancelled"]) == (12, 1, 0)
    assert len(order["throughput_per_minute"]) == WINDOW_S / 60
    assert order["throughput_per_minute"][-1] == 4 and order["throughput_per_minute"][-11] == 2
    assert sum(order["throughput_per_minute"]) == 6
    assert order["duration_s"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "sample": 100}
    assert order["failures_by_stage"] == {"charge": 1} and order["stuck"] == 0
    assert stats["cases"]["refund"]["stuck"] == 4 and stats["cases"]["refund"]["duration_s"] is None
    header, first, second = table(stats)
    assert header.split()[:3] == ["case", "done/h", "failed/h"]
    assert first.split() == ["order", "12", "1", "0.8", "50.00", "95.00", "99.00", "0", "charge=1"]
    assert second.split() == ["refund", "0", "0", "0.0", "-", "-", "-", "4", "-"]


@pytest.mark.integration
async def test_stats_from_a_real_run_in_the_gateway_and_the_cli(settings: Settings, tmp_path: Path) -> None:
    cluster = Cluster(settings, tmp_path, workers=1)
    async with open_gateway(settings, gateway_stats_fresh_s=0.0, stats_stuck_after_s=1.0) as gw:
        await cluster.start()
        try:
            done = [await gw.flow.start("flaky", {"succeed_on": 1}) for _ in range(5)]
            failed = [await gw.flow.start("flaky", {"succeed_on": 1, "fatal": True}) for _ in range(2)]
            finished = await wait_finished(gw.flow, [d.process_id for d in done + failed], timeout_s=60)
            assert [d.status.value for d in finished] == ["completed"] * 5 + ["failed"] * 2, cluster.logs()
        finally:
            cluster.stop()
        # no worker left: a process due in half a second is never fired, and is stuck a second later
        await gw.flow.start("flaky", {"succeed_on": 1}, start_at=time.time() + 0.5)
        await asyncio.sleep(2.0)
        body = (await gw.client.get("/stats")).json()
    flaky = body["last_hour"]["cases"]["flaky"]
    assert (flaky["completed"], flaky["failed"], flaky["stuck"]) == (5, 2, 1)
    assert flaky["failures_by_stage"] == {"flaky": 2}
    assert sum(flaky["throughput_per_minute"]) == 7
    durations = flaky["duration_s"]
    assert durations["sample"] == 5 and 0 < durations["p50"] <= durations["p95"] <= durations["p99"] < 60
    assert body["last_hour"]["stuck_after_s"] == 1.0

    env = settings_env(settings, STAGEFLOW_STATS_STUCK_AFTER_S="1")
    assert json.loads(await stageflow(env, "stats", "--json"))["cases"]["flaky"] == flaky  # the same store
    row = next(line for line in (await stageflow(env, "stats")).splitlines() if line.startswith("flaky"))
    assert row.split()[1:3] == ["5", "2"] and row.split()[-2:] == ["1", "flaky=2"]
