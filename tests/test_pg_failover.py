"""PostgreSQL fails over to its synchronous replica mid-run: nothing is lost, nothing applied twice, no long stall.

A primary and a synchronous streaming replica of our own (``tests/support/pg_ha.py``, beside the machine's
cluster) hold the store and the services' inbox; ``STAGEFLOW_STORE_URL`` names both hosts with
``target_session_attrs=read-write``. While workers (real subprocesses on the machine's RabbitMQ) run processes,
the primary is stopped with ``-m immediate`` (commits in flight die with it: the ambiguous case) and the
replica is promoted a second later. The relay grace is 60 s, beyond the run, so nothing lost can be covered up.
Witnesses: the ledger trigger, the ``effects`` table and the history, read on the promoted replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from framework import Settings, Stageflow, StageflowError
from tests.support.cases import CASES, FiveCalls
from tests.support.cluster import Cluster
from tests.support.ledger import audit_five_calls, install_ledger, longest_gap_s, wait_all_finished
from tests.support.pg_ha import PgHa, unavailable

pytestmark = [pytest.mark.fault, pytest.mark.integration]

IN_FLIGHT = 30
RUN_BEFORE_FAILOVER_S = 3.0
PROMOTE_AFTER_S = 1.0  # the time a failover manager (Patroni, CloudNativePG) takes to decide, roughly
RUN_AFTER_FAILOVER_S = 6.0
MAX_GAP_S = 10.0


@pytest.fixture
def pg_ha() -> Iterator[PgHa]:
    reason = unavailable()
    if reason:
        pytest.skip(f"no PostgreSQL replica pair on this machine: {reason}")
    ha = PgHa()
    try:
        ha.start()
        yield ha
    finally:
        ha.drop()


async def test_failover_to_the_replica_loses_nothing_and_stalls_nothing(
    settings: Settings, pg_ha: PgHa, tmp_path: Path
) -> None:
    ha_settings = settings.model_copy(update={"store_url": pg_ha.url, "relay_grace_s": 60.0})
    schema = ha_settings.store_schema
    async with Stageflow.from_settings(ha_settings, cases=CASES, connection_name="failover-test") as flow:
        conn = await asyncpg.connect(pg_ha.url)
        await install_ledger(conn, schema)
        await conn.close()
        workers = Cluster(ha_settings, tmp_path, workers=2, STAGEFLOW_TIMER_INTERVAL_S="0.25")
        await workers.start()
        process_ids: list[str] = []
        started_at = time.monotonic()
        stop_starting_at = started_at + RUN_BEFORE_FAILOVER_S + PROMOTE_AFTER_S + RUN_AFTER_FAILOVER_S

        async def feed() -> None:
            n = 0
            while time.monotonic() < stop_starting_at:
                try:  # the test's own starts ride out the failover too: the client key makes a retry harmless
                    counts = await flow.store.count_by_status(FiveCalls.name)
                    if counts.get("running", 0) + counts.get("waiting", 0) >= IN_FLIGHT:
                        await asyncio.sleep(0.02)
                        continue
                    doc = await flow.start(FiveCalls, {"n": n}, client_key=f"n-{n}")
                except StageflowError:
                    await asyncio.sleep(0.2)
                    continue
                process_ids.append(doc.process_id)
                n += 1

        try:
            feeding = asyncio.create_task(feed())
            await asyncio.sleep(RUN_BEFORE_FAILOVER_S)
            unfinished_at_failover = len(process_ids)
            await asyncio.to_thread(pg_ha.stop_primary_immediately)
            await asyncio.sleep(PROMOTE_AFTER_S)
            await asyncio.to_thread(pg_ha.promote_replica)
            await feeding
            conn = await asyncpg.connect(pg_ha.url)  # the promoted replica
            try:
                finished = await wait_all_finished(conn, schema, len(process_ids), 60)
                report = await audit_five_calls(conn, schema, process_ids)
                gap_s = await longest_gap_s(conn, schema)
            finally:
                await conn.close()
        finally:
            codes = workers.stop()

    figures = {
        "processes": len(process_ids), "started_before_failover": unfinished_at_failover,
        "completed": report.completed, "lost": report.lost, "doubled_stage_commits": report.doubled_stage_commits,
        "doubled_effects": report.doubled_effects, "missing_effects": report.missing_effects,
        "longest_gap_s": round(gap_s, 2),
    }
    print("\nPG FAILOVER " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert finished, f"not all finished: {figures}\n{report.examples}\n{workers.logs()}"
    assert report.clean, f"{figures}\n{report.examples}\n{workers.logs()}"
    assert report.lost == 0 and report.doubled_stage_commits == 0 and report.doubled_effects == 0
    assert gap_s <= MAX_GAP_S, f"stalled {gap_s:.1f} s: {figures}\n{workers.logs()}"
    assert all(code == 0 for code in codes.values()), codes
