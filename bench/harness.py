"""The measuring shared by every system: one deployment, one warm-up, one timed burst of chains.

**Hops per second** of a run = ``chains x STAGES`` / the burst's window. The window opens just before the
driver starts the first chain and closes at the first poll (every ``poll_s``) that finds every chain
finished; starting the chains (publishing, and for Stageflow creating the documents) is inside it. Rows
the PostgreSQL peers update are inserted before the window (Stageflow creates its documents inside it).
CPU seconds (:mod:`bench.cpu`) are read at the same two instants. A chain that has not finished within
``timeout_s`` fails the run (:class:`BenchError`): a benchmark that drops work measures nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu
from bench.peers.base import STAGES, BenchError, Peer, say
from bench.peers.celery_pg import CeleryPg
from bench.peers.dramatiq_pg import DramatiqPg
from bench.peers.raw_amqp import RawAmqp, RawAmqpPg
from bench.peers.stageflow import StageflowClusterPeer, StageflowPeer

PEERS: dict[str, type[Peer]] = {
    peer.name: peer for peer in (StageflowPeer, StageflowClusterPeer, RawAmqp, RawAmqpPg, DramatiqPg, CeleryPg)
}


@dataclass(frozen=True)
class Plan:
    chains: int  # in the timed burst
    workers: int = 2
    warmup: int = 20  # chains run first, outside the window (connections, caches, JIT of queues)
    timeout_s: float = 180.0  # for the burst; the warm-up gets half
    poll_s: float = 0.05


async def run_burst(name: str, plan: Plan, *, broker_url: str | None = None) -> dict[str, Any]:
    """Deploy ``name`` with ``plan.workers`` workers, warm up, time one burst, tear down; the run's figures.
    ``broker_url``: for a Stageflow peer, another RabbitMQ (a cluster's nodes) than the tests' one."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        peer_class = PEERS[name]
        made = peer_class(Path(tmp), plan.workers) if broker_url is None else (
            peer_class(Path(tmp), plan.workers, broker_url=broker_url))  # type: ignore[call-arg]
        async with made as peer:
            warm = range(-plan.warmup, 0)
            await peer.prepare_chains(warm)
            await peer.start_chains(warm)
            await wait_done(peer, warm, timeout_s=plan.timeout_s / 2, poll_s=plan.poll_s, label=None)

            ids = range(plan.chains)
            await peer.prepare_chains(ids)
            before = cpu.sample()
            began = time.monotonic()
            starting = asyncio.create_task(peer.start_chains(ids))
            try:
                await wait_done(peer, ids, timeout_s=plan.timeout_s, poll_s=plan.poll_s, label=name, starting=starting)
            finally:
                starting.cancel()
            seconds = time.monotonic() - began
            after = cpu.sample()
            namespace = peer.namespace
    hops = plan.chains * STAGES
    return {
        "system": name,
        "namespace": namespace,  # its schema and queue prefix, dropped by now
        "chains": plan.chains,
        "hops": hops,
        "seconds": round(seconds, 3),
        "hops_per_s": round(hops / seconds, 1),
        **cpu.used(before, after),
    }


async def wait_done(
    peer: Peer, ids: Sequence[int], *, timeout_s: float, poll_s: float, label: str | None,
    starting: asyncio.Task[None] | None = None,
) -> None:
    """Poll until every chain in ``ids`` is done; progress on stderr about once a second if ``label``."""
    began = time.monotonic()
    last_print = began
    while True:
        if starting is not None and starting.done():
            starting.result()  # a failed start fails the run
        done = await peer.count_done(ids)
        now = time.monotonic()
        if done >= len(ids):
            return
        if label and now - last_print >= 1.0:
            say(f"[bench]   {label}: {done}/{len(ids)} chains done, {now - began:.1f}s")
            last_print = now
        if now - began > timeout_s:
            raise BenchError(f"{peer.name}: only {done} of {len(ids)} chains finished within {timeout_s:.0f}s")
        peer.check_alive()
        await asyncio.sleep(poll_s)
