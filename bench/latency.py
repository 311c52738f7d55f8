"""Stageflow's hop latency, unloaded and at half its peak rate (figures from the history table, see
:mod:`bench.measure` for what a hop's latency is).

* **unloaded**: one process in flight; each is started once the previous one has completed.
* **half load**: processes started at a steady pace such that transitions arrive at about half the peak
  rate measured by the bursts, for ``half_load_s``; the hops of every process started count.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu
from bench.harness import wait_done
from bench.measure import PhaseFigures, ms, percentile, phase_figures
from bench.peers.base import STAGES, say
from bench.peers.stageflow import StageflowPeer


@dataclass(frozen=True)
class LatencyPlan:
    unloaded: int  # processes, one at a time
    unloaded_budget_s: float  # stop starting unloaded processes after this
    half_load_s: float  # how long processes are started at half the peak rate
    workers: int = 2
    warmup: int = 20
    timeout_s: float = 60.0


async def stageflow_latency(plan: LatencyPlan, peak_hops_per_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        async with StageflowPeer(Path(tmp), plan.workers) as peer:
            warm = range(-plan.warmup, 0)
            await peer.start_chains(warm)
            await wait_done(peer, warm, timeout_s=plan.timeout_s, poll_s=0.05, label=None)
            unloaded = await _unloaded(peer, plan)
            half = await _half_load(peer, plan, peak_hops_per_s)
    return {**unloaded, **half}


async def _unloaded(peer: StageflowPeer, plan: LatencyPlan) -> dict[str, Any]:
    result = await unloaded_hops(peer, range(plan.unloaded), budget_s=plan.unloaded_budget_s)
    say(f"[bench] stageflow unloaded: {result['unloaded_processes']} processes one at a time, hop p50 "
        f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result


async def unloaded_hops(peer: StageflowPeer, chains: range, *, budget_s: float) -> dict[str, Any]:
    """Start ``chains`` one at a time (each once the previous one has completed) until ``budget_s`` runs
    out; their hop latency."""
    ids: list[int] = []
    deadline = time.monotonic() + budget_s
    for chain in chains:
        if time.monotonic() > deadline:
            say(f"[bench] unloaded latency: out of time after {len(ids)} processes")
            break
        await peer.start_one(chain)
        ids.append(chain)
        await wait_done(peer, [chain], timeout_s=10, poll_s=0.002, label=None)
    figures = await _figures(peer, ids)
    return {
        "unloaded_processes": len(ids),
        "p50_ms": ms(percentile(figures.hops_ms, 50)),
        "p99_ms": ms(percentile(figures.hops_ms, 99)),
    }


async def _half_load(peer: StageflowPeer, plan: LatencyPlan, peak_hops_per_s: float) -> dict[str, Any]:
    starts_per_s = max(peak_hops_per_s / 2 / STAGES, 1.0)
    count = max(int(starts_per_s * plan.half_load_s), 1)
    first = 1_000_000  # ids apart from the unloaded ones
    ids = list(range(first, first + count))
    say(f"[bench] stageflow at half load: {count} processes at {starts_per_s:.0f}/s "
        f"(~{starts_per_s * STAGES:.0f} hops/s) for {plan.half_load_s:.0f}s")
    before = cpu.sample()
    began = time.monotonic()
    tasks = []
    for k, chain in enumerate(ids):  # a steady pace, not bursts: each start at its own instant
        await asyncio.sleep(max(0.0, began + k / starts_per_s - time.monotonic()))
        tasks.append(asyncio.create_task(peer.start_one(chain)))
    await asyncio.gather(*tasks)
    await wait_done(peer, ids, timeout_s=plan.timeout_s, poll_s=0.05, label="stageflow half load")
    used = cpu.used(before, cpu.sample())
    figures = await _figures(peer, ids)
    result = {
        "half_load_target_hops_per_s": round(starts_per_s * STAGES, 1),
        "half_load_hops_per_s": round(figures.transitions_per_s, 1),
        "p50_half_load_ms": ms(percentile(figures.hops_ms, 50)),
        "p99_half_load_ms": ms(percentile(figures.hops_ms, 99)),
        # CPU per hop at a steady pace (batches are small) against the bursts' (batches are large)
        "half_load_cpu_s": used,
        "half_load_cpu_ms_per_hop": _ms_per_hop(used, count * STAGES),
    }
    say(f"[bench] stageflow half load: {result['half_load_hops_per_s']} hops/s, hop p50 "
        f"{result['p50_half_load_ms']} ms, p99 {result['p99_half_load_ms']} ms; CPU {used} "
        f"({result['half_load_cpu_ms_per_hop']} ms/hop)")
    return result


async def _figures(peer: StageflowPeer, ids: list[int]) -> PhaseFigures:
    if peer.conn is None:
        raise RuntimeError("the peer is not open")
    return await phase_figures(peer.conn, peer.namespace, [peer.process_ids[i] for i in ids])


def _ms_per_hop(used: dict[str, float | None], hops: int) -> float | None:
    if any(v is None for v in used.values()):
        return None
    return round(sum(v for v in used.values() if v is not None) * 1000 / hops, 3)
