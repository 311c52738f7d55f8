"""The row "stageflow on the 3-node cluster": Stageflow's burst on a RabbitMQ cluster of our own (three nodes
on this machine, ``tests/support/rabbit_cluster.py``), beside the single-node row, in the same run.

Stageflow gives its quorum queues one replica per listed node, so every message is written on three nodes
(a majority, two, before its confirm) instead of one: the ratio of the two rows is the replication's cost.
The cluster is started once for the whole comparison and removed after. A machine that cannot run it gets
the reason in the table and the JSON line (``stageflow_cluster_unavailable``), never a silent gap.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bench.peers.base import say
from tests.support import rabbit_cluster

CLUSTER = "stageflow_cluster"
LABEL = "stageflow on the 3-node cluster (quorum queues on 3 replicas)"


@dataclass(frozen=True)
class BenchCluster:
    broker_url: str | None  # every node, comma-separated; None: not running
    unavailable: str | None = None  # why not (None if it runs, or was not asked for)


@asynccontextmanager
async def bench_cluster(wanted: bool) -> AsyncIterator[BenchCluster]:
    """A running 3-node cluster if ``wanted`` and this machine can start one; else why not."""
    if not wanted:
        yield BenchCluster(None)
        return
    reason = rabbit_cluster.unavailable()
    if reason:
        say(f"[bench] {CLUSTER}: not measured, {reason}")
        yield BenchCluster(None, reason)
        return
    cluster = rabbit_cluster.RabbitCluster(3)
    try:
        say("[bench] starting a 3-node RabbitMQ cluster (rc1..3@localhost, ports 5781-5783)")
        try:
            await asyncio.to_thread(cluster.start)
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            say(f"[bench] {CLUSTER}: not measured, the cluster did not start: {exc}")
            yield BenchCluster(None, f"the 3-node cluster did not start: {str(exc)[:200]}")
            return
        yield BenchCluster(cluster.broker_url)
    finally:
        await asyncio.to_thread(cluster.stop)
