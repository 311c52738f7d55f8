"""The benchmark's phases on one cluster: warm-up, unloaded latency, then the loaded burst."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.cases import BenchFlow
from bench.cluster import BenchCluster, BenchError
from bench.measure import PhaseFigures, ms, percentile, phase_figures, summary
from framework import Stageflow
from framework.logs import configure_logging

FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Plan:
    processes: int  # the loaded burst
    unloaded: int  # processes run one at a time
    warmup: int = 20  # run first and left out of every figure (connection pools, caches)
    start_concurrency: int = 64  # flow.start() calls in flight during the burst
    load_timeout_s: float = 120.0  # stop waiting for the burst after this (figures cover what finished)
    unloaded_budget_s: float = 30.0  # stop starting unloaded processes after this (figures cover those run)
    boot_timeout_s: float = 30.0  # for workers and services to attach their consumers
    warmup_timeout_s: float = 30.0


def say(text: str, *, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


async def run_cluster(plan: Plan, workers: int) -> dict[str, Any]:
    """Boot ``workers`` workers and one services process on fresh queues and schema, measure, tear down."""
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        cluster = BenchCluster(workers, Path(tmp))
        try:
            # Opening the driver's Stageflow creates the schema and queues before the subprocesses start.
            async with Stageflow.from_settings(
                cluster.settings, cases=[BenchFlow], connection_name="stageflow-bench"
            ) as flow:
                cluster.start()
                boot_s = await cluster.wait_ready(plan.boot_timeout_s)
                say(f"[bench] {workers} worker(s) + services ready in {boot_s:.1f}s ({cluster.namespace})")
                conn = await asyncpg.connect(cluster.settings.store_url)
                try:
                    return await _phases(plan, workers, flow, cluster, conn)
                finally:
                    await conn.close()
        except Exception:
            say(f"[bench] run with {workers} worker(s) failed; subprocess logs:\n{cluster.logs()}")
            raise
        finally:
            codes = await asyncio.to_thread(cluster.stop)
            unclean = {name: code for name, code in codes.items() if code not in (0, None)}
            if unclean:
                say(f"[bench] unclean subprocess exits: {unclean}")
            await cluster.drop()


async def _phases(
    plan: Plan, workers: int, flow: Stageflow, cluster: BenchCluster, conn: asyncpg.Connection
) -> dict[str, Any]:
    schema = cluster.namespace
    if plan.warmup:
        warm_ids: list[str] = []
        await _start_many(flow, plan.warmup, plan.start_concurrency, into=warm_ids, offset=-plan.warmup)
        if not await _wait_all(conn, schema, warm_ids, cluster, timeout_s=plan.warmup_timeout_s):
            raise BenchError(f"the warm-up processes did not finish within {plan.warmup_timeout_s:.0f} s")

    # Unloaded: one process at a time, each started once the previous one has finished.
    unloaded_ids: list[str] = []
    deadline = time.monotonic() + plan.unloaded_budget_s
    for i in range(plan.unloaded):
        if time.monotonic() > deadline:
            say(f"[bench] unloaded phase out of time after {i} processes")
            break
        doc = await flow.start(BenchFlow, {"n": i})
        unloaded_ids.append(doc.process_id)
        if not await _wait_all(conn, schema, [doc.process_id], cluster, timeout_s=10, poll_s=0.002):
            raise BenchError(f"unloaded process {doc.process_id} did not finish within 10 s")
    unloaded = await phase_figures(conn, schema, unloaded_ids)
    say(
        f"[bench] {workers} worker(s), unloaded: {len(unloaded_ids)} processes one at a time, "
        f"hop p50 {ms(percentile(unloaded.hops_ms, 50))} ms, p99 {ms(percentile(unloaded.hops_ms, 99))} ms"
    )

    # Loaded: a burst of processes started as fast as the driver can, all in flight together.
    began = time.monotonic()
    loaded_ids: list[str] = []
    starting = asyncio.create_task(_start_many(flow, plan.processes, plan.start_concurrency, into=loaded_ids))
    try:
        finished = await _wait_all(
            conn, schema, loaded_ids, cluster, timeout_s=plan.load_timeout_s, label=f"{workers} worker(s)",
            total=plan.processes, starting=starting, since=began,
        )
    finally:
        starting.cancel()
    start_s = starting.result() if finished else None  # ``finished`` implies the starting task is done
    wall_s = time.monotonic() - began
    loaded = await phase_figures(conn, schema, loaded_ids)
    result = _run_result(workers, loaded, unloaded, wall_s=wall_s, start_s=start_s)
    if not finished:
        result["timed_out"] = True
    say(
        f"[bench] {workers} worker(s), loaded: {loaded.completed}/{plan.processes} completed, "
        f"{result['transitions_per_s']} transitions/s, hop p50 {result['loaded_p50_ms']} ms, "
        f"p99 {result['loaded_p99_ms']} ms"
    )
    return result


def _run_result(
    workers: int, loaded: PhaseFigures, unloaded: PhaseFigures, *, wall_s: float, start_s: float | None
) -> dict[str, Any]:
    return {
        "workers": workers,
        "processes": loaded.processes,
        "completed": loaded.completed,
        "failed": loaded.failed,
        "transitions": loaded.transitions,
        "transitions_per_s": round(loaded.transitions_per_s, 1),
        "seconds": round(loaded.window_s, 2),  # first creation to last stage end, from the history
        "wall_s": round(wall_s, 2),  # the driver's view, polling included
        "start_s": None if start_s is None else round(start_s, 2),  # how long the driver took to start the burst
        **summary(loaded, prefix="loaded_"),
        "unloaded_processes": unloaded.processes,
        **summary(unloaded, prefix="unloaded_"),
    }


async def _start_many(flow: Stageflow, count: int, concurrency: int, *, into: list[str], offset: int = 0) -> float:
    """Start ``count`` processes, at most ``concurrency`` at once, appending their ids to ``into``.
    Returns the seconds it took."""
    began = time.monotonic()
    limit = asyncio.Semaphore(concurrency)

    async def start_one(n: int) -> None:
        async with limit:
            into.append((await flow.start(BenchFlow, {"n": n})).process_id)

    await asyncio.gather(*(start_one(offset + i) for i in range(count)))
    return time.monotonic() - began


async def _wait_all(
    conn: asyncpg.Connection, schema: str, ids: list[str], cluster: BenchCluster, *, timeout_s: float,
    label: str | None = None, total: int | None = None, starting: asyncio.Task[Any] | None = None,
    since: float | None = None, poll_s: float = 0.25,
) -> bool:
    """Poll until the processes in ``ids`` are finished (``ids`` may still be growing while ``starting``
    runs, up to ``total``); print progress to stderr if ``label``. False if ``timeout_s`` ran out."""
    began = time.monotonic()
    since = since if since is not None else began
    total = total if total is not None else len(ids)
    last_print = -1.0
    tty = sys.stderr.isatty()
    while True:
        if starting is not None and starting.done():
            starting.result()  # a failed start fails the run
        snapshot = list(ids)
        done = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.processes WHERE process_id = ANY($1) AND status = ANY($2)",
            snapshot, list(FINISHED),
        ) if snapshot else 0
        now = time.monotonic()
        complete = done >= total and (starting is None or starting.done())
        timed_out = now - began > timeout_s
        if label and (now - last_print >= 1.0 or complete or timed_out):
            line = f"[bench] {label}: {done}/{total} processes done, {now - since:.1f}s"
            say(("\r" + line) if tty else line, end="" if tty else "\n")
            last_print = now
        if complete or timed_out:
            if label and tty:
                say("")
            return complete
        cluster.check_alive()
        await asyncio.sleep(poll_s)
