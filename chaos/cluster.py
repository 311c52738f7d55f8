"""The production-cluster scenarios (design point 9), each on servers it starts for itself (:mod:`chaos.servers`).

* ``broker-node-kill``: workers and the services process on a 3-node RabbitMQ cluster, ``STAGEFLOW_BROKER_URL``
  listing every node. Mid-run, the node the workers are connected to is SIGKILLed and kept down.
* ``pg-failover``: the store and the services' inbox on a PostgreSQL primary with a synchronous replica, the
  store URL naming both hosts with ``target_session_attrs=read-write``. Mid-run, the primary is stopped with
  ``-m immediate`` (commits in flight die with it) and the replica promoted a second later.

Processes keep being started through the fault. The relay's grace is beyond the drain, so a message lost in the
switch is not re-published behind a delay: it shows as a lost process. Besides lost and applied twice (measured
like every scenario's), each reports from the ledger the longest gap between two committed transitions, over
the whole run: at most 5 s for the node kill, 10 s for the failover, or the scenario fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from chaos.deploy import stop_task
from chaos.scenarios import Run, _consumers_back, _drain, _wait_for, flow_items, until_busy
from tests.support.ledger import longest_gap

NODE_KILL_MAX_GAP_S = 5.0
FAILOVER_MAX_GAP_S = 10.0
PROMOTE_AFTER_S = 1.0  # the time a failover manager (Patroni, CloudNativePG) takes to decide, roughly
WORKER_CONNECTION = "stageflow-worker-"  # the start of a worker's connection name


async def broker_node_kill(run: Run) -> None:
    dep, r = run.dep, run.result
    cluster = dep.servers.rabbit
    if cluster is None:
        raise RuntimeError("broker-node-kill runs on its own RabbitMQ cluster (Scenario.servers)")
    workers = len(dep.cluster.workers)

    async def kill() -> None:
        on_node = await asyncio.to_thread(cluster.clients_by_node, WORKER_CONNECTION)
        victim = max(cluster.nodes, key=lambda node: on_node[node.name])
        r.details["workers_on_nodes_before"] = on_node
        r.details["killed"] = victim.name
        r.expect(on_node[victim.name] == workers, f"the workers are not all on one node: {on_node}")
        run.fault_at = time.time()
        await asyncio.to_thread(victim.kill)  # SIGKILL; it stays down
        r.kills = 1

    await _fault_mid_run(run, kill, label="after the node kill")
    killed = next(node for node in cluster.nodes if node.name == r.details["killed"])
    after = await asyncio.to_thread(cluster.clients_by_node, WORKER_CONNECTION)
    moved = {name: count for name, count in after.items() if name != killed.name}
    r.details["workers_on_nodes_after"] = moved
    r.expect(sum(moved.values()) == workers, f"the workers did not all move to the live nodes: {moved}")
    await _longest_gap(run, NODE_KILL_MAX_GAP_S)


async def pg_failover(run: Run) -> None:
    dep, r = run.dep, run.result
    pair = dep.servers.pg
    if pair is None:
        raise RuntimeError("pg-failover runs on its own PostgreSQL pair (Scenario.servers)")

    async def fail_over() -> None:
        run.fault_at = time.time()
        await asyncio.to_thread(pair.stop_primary_immediately)
        await asyncio.sleep(PROMOTE_AFTER_S)
        await asyncio.to_thread(pair.promote_replica)
        r.details["promoted_after_s"] = PROMOTE_AFTER_S

    await _fault_mid_run(run, fail_over, label="after the failover")
    await _longest_gap(run, FAILOVER_MAX_GAP_S)


async def _fault_mid_run(run: Run, fault: Callable[[], Awaitable[None]], *, label: str) -> None:
    """Boot, start a third of the processes, apply ``fault()`` once they are busy, start the rest through
    and after it, and drain. The services and workers must survive it (a supervisor counts deaths)."""
    p, dep, r = run.profile, run.dep, run.result
    run.healthy = dep.process_ids  # every process started here must complete
    await dep.boot()
    total = p.cluster_processes
    first = max(total // 3, 1)
    reserve = [total - first]  # released at the fault: processes are started right through it
    unexpected = dep.supervise([*dep.cluster.workers, dep.services])
    feeding = asyncio.create_task(dep.feed(flow_items(total, "c"), in_flight=p.cluster_in_flight,
                                           held_back=lambda: reserve[0]))
    try:
        await until_busy(run, first, first)
        r.details["unfinished_at_fault"] = await dep.unfinished()
        await fault()  # it sets run.fault_at (wall clock, as the ledger's times) just before it strikes
        reserve[0] = 0
        back = await _wait_for(_consumers_back(dep), 60)
        r.details["consumers_back_s"] = back
        r.expect(back is not None, f"{label}: workers/services did not consume again within 60 s")
        await feeding
        await _drain(run, label=label)
    finally:
        await stop_task(feeding)
    r.details["unexpected_deaths"] = unexpected.deaths
    r.expect(not unexpected.deaths, f"subprocesses died: {unexpected.deaths}")
    r.expect(r.details["unfinished_at_fault"] > 0, "the fault landed when no process was running")


async def _longest_gap(run: Run, limit_s: float) -> None:
    r = run.result
    gap, ended = await run.dep.execute(lambda conn: longest_gap(conn, run.dep.schema))
    r.longest_gap_s = round(gap, 2)
    if ended is not None and run.fault_at is not None:  # where it was: the fault's, or elsewhere
        r.details["longest_gap_began_s_after_fault"] = round(ended - gap - run.fault_at, 2)
    r.details["max_gap_s"] = limit_s
    r.expect(gap <= limit_s, f"stalled: {gap:.1f} s without a committed transition (at most {limit_s:g} s)")
