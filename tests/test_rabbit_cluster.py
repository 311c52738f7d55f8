"""On a real 3-node RabbitMQ cluster: the queues are replicated on every node, and SIGKILLing the node the
workers are connected to (and keeping it down) loses nothing, doubles nothing and stalls nothing for long.

The cluster (``tests/support/rabbit_cluster.py``) runs beside the machine's own node, started once per session.
Workers and the services process are real subprocesses given every node in ``STAGEFLOW_BROKER_URL``; the test's
own ``Stageflow`` (which starts the processes) is on the cluster too. The relay grace is 60 s, far beyond the
run, so a message lost in the switch cannot be covered up by the relay: it would show as a lost process.
Witnesses: the ledger trigger (every commit), the ``effects`` table, the history (``tests/support/ledger.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from framework import Settings, Stageflow
from framework.broker.rabbitmq import RabbitBroker
from tests.support.cases import CASES, FiveCalls
from tests.support.cluster import Cluster
from tests.support.ledger import audit_five_calls, count_finished, install_ledger, longest_gap_s, wait_all_finished
from tests.support.rabbit_cluster import RabbitCluster, unavailable

pytestmark = [pytest.mark.fault, pytest.mark.integration]

IN_FLIGHT = 30  # unfinished processes kept running
RUN_BEFORE_KILL_S = 3.0
RUN_AFTER_KILL_S = 6.0  # processes keep being started for this long after the kill
MAX_GAP_S = 5.0  # the longest stretch without a committed transition


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    reason = unavailable()
    if reason:
        pytest.skip(f"no RabbitMQ cluster on this machine: {reason}")
    cluster = RabbitCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_settings(settings: Settings, rabbit_cluster: RabbitCluster) -> Settings:
    return settings.model_copy(update={"broker_url": rabbit_cluster.broker_url, "relay_grace_s": 60.0})


async def test_queues_have_a_replica_on_every_node(cluster_settings: Settings, rabbit_cluster: RabbitCluster) -> None:
    broker = RabbitBroker(cluster_settings.broker_url, prefix=cluster_settings.queue_prefix)
    await broker.connect()
    try:
        assert broker.connected_node == "127.0.0.1:5781"
    finally:
        await broker.close()
    listing = await asyncio.to_thread(
        rabbit_cluster.nodes[1].ctl, "list_queues", "name", "members", "--no-table-headers"
    )
    members = {line.split(None, 1)[0]: line for line in listing.splitlines() if line.strip()}
    for queue in ("inner", "service", "parked"):
        line = members[f"{cluster_settings.queue_prefix}.{queue}"]
        assert all(node.name in line for node in rabbit_cluster.nodes), line


async def test_killing_the_connected_node_loses_nothing_and_stalls_nothing(
    cluster_settings: Settings, rabbit_cluster: RabbitCluster, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = cluster_settings.store_schema
    victim = rabbit_cluster.nodes[0]  # every client tries the first listed node first
    survivor = rabbit_cluster.nodes[1]
    async with Stageflow.from_settings(cluster_settings, cases=CASES, connection_name="cluster-test") as flow:
        await install_ledger(pg, schema)
        workers = Cluster(cluster_settings, tmp_path, workers=2, admin_url=survivor.url,
                          STAGEFLOW_TIMER_INTERVAL_S="0.25")
        await workers.start()
        process_ids: list[str] = []
        killed_at: float | None = None

        async def feed() -> None:  # until RUN_AFTER_KILL_S after the kill, however long the kill took to set up
            while killed_at is None or time.monotonic() < killed_at + RUN_AFTER_KILL_S:
                counts = await flow.store.count_by_status(FiveCalls.name)
                if counts.get("running", 0) + counts.get("waiting", 0) < IN_FLIGHT:
                    process_ids.append((await flow.start(FiveCalls, {"n": len(process_ids)})).process_id)
                else:
                    await asyncio.sleep(0.02)

        try:
            feeding = asyncio.create_task(feed())
            await asyncio.sleep(RUN_BEFORE_KILL_S)
            on_victim = await asyncio.to_thread(rabbit_cluster.clients_on, victim, "stageflow-worker-")
            assert on_victim == 2, "the workers are not on the first node"
            unfinished_at_kill = len(process_ids) - await count_finished(pg, schema)
            await asyncio.to_thread(victim.kill)  # and it stays down
            killed_at = time.monotonic()
            await feeding
            assert killed_at is not None
            finished = await wait_all_finished(pg, schema, len(process_ids), 60)
            recovery_s = time.monotonic() - killed_at
            report = await audit_five_calls(pg, schema, process_ids)
            gap_s = await longest_gap_s(pg, schema)
            broker = flow.broker  # the test's own connection moved too, and counted it
            assert isinstance(broker, RabbitBroker) and broker.reconnects >= 1, "no reconnect counted"
            assert broker.connected_node not in (None, f"127.0.0.1:{victim.port}"), broker.connected_node
            moved = sum([await asyncio.to_thread(rabbit_cluster.clients_on, node, "stageflow-worker-")
                         for node in rabbit_cluster.nodes[1:]])
        finally:
            codes = workers.stop()

    figures = {
        "processes": len(process_ids), "unfinished_at_kill": unfinished_at_kill, "completed": report.completed,
        "lost": report.lost, "doubled_stage_commits": report.doubled_stage_commits,
        "doubled_effects": report.doubled_effects, "missing_effects": report.missing_effects,
        "longest_gap_s": round(gap_s, 2), "all_done_s_after_kill": round(recovery_s, 1),
    }
    print("\nRABBIT CLUSTER NODE KILL " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert finished, f"not all finished: {figures}\n{report.examples}\n{workers.logs()}"
    assert unfinished_at_kill > 0
    assert report.clean, f"{figures}\n{report.examples}\n{workers.logs()}"
    assert report.lost == 0 and report.doubled_stage_commits == 0 and report.doubled_effects == 0
    assert gap_s <= MAX_GAP_S, f"stalled {gap_s:.1f} s: {figures}\n{workers.logs()}"
    assert moved == 2, "the workers did not move to the live nodes"
    assert all(code == 0 for code in codes.values()), codes
