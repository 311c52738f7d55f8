"""``python -m bench.scale [--quick]`` (``make bench-scale``): does a transition cost the same as the work grows?

Issue 6, goal 3, on one worker subprocess and one services subprocess (fresh schema and queues):

1. **history length**: ``bench_loop`` processes run 1,000 transitions each; the time per transition of
   their 5th-54th transitions is compared with that of their 951st-1,000th (from the history rows);
2. **store size**: the same burst of ``bench_flow`` processes (and a few run one at a time) with 1,000
   processes in the store, then again after filler rows bring it to 1,000,000 (bulk-inserted in SQL:
   completed processes with five history rows each; 100,000 with ``--quick``);
3. **status reads** at both sizes: ``store.load`` and ``GET /processes/{id}`` (the gateway in-process,
   through httpx's ASGI transport) of random processes, one at a time;
4. **worker memory**: the worker's RSS sampled every second while processes are started at a steady
   rate (10 minutes; 40 s with ``--quick``).

Prints a table on stderr and one JSON line on stdout. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.cases import BenchFlow, LoopFlow
from bench.cluster import BenchCluster, BenchError
from bench.measure import ms, percentile, phase_figures
from bench.run import _start_many, _wait_all, say
from framework import Stageflow
from framework.logs import configure_logging

READ_KEY = "bench-scale-read-key"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller store and a short memory run")
    args = parser.parse_args(argv)
    args.big = 100_000 if args.quick else 1_000_000
    args.loops = 4 if args.quick else 10  # bench_loop processes, run side by side
    args.burst = 300 if args.quick else 1000
    args.memory_s = 40.0 if args.quick else 600.0
    args.reads = 1000 if args.quick else 5000
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    configure_logging("WARNING")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stageflow-scale-") as tmp:
        cluster = BenchCluster(1, Path(tmp))
        cluster.settings.api_keys_read = [READ_KEY]
        try:
            async with Stageflow.from_settings(
                cluster.settings, cases=[BenchFlow, LoopFlow], connection_name="stageflow-scale"
            ) as flow:
                cluster.start()
                await cluster.wait_ready()
                conn = await asyncpg.connect(cluster.settings.store_url)
                try:
                    result = await _measure(args, flow, cluster, conn)
                finally:
                    await conn.close()
        except Exception:
            say(f"[scale] failed; subprocess logs:\n{cluster.logs()}")
            raise
        finally:
            await asyncio.to_thread(cluster.stop)
            await cluster.drop()
    result["seconds"] = round(time.monotonic() - began, 1)
    return result


async def _measure(
    args: argparse.Namespace, flow: Stageflow, cluster: BenchCluster, conn: asyncpg.Connection
) -> dict[str, Any]:
    schema = cluster.namespace
    history = await _history_length(flow, cluster, conn, loops=args.loops)
    say(f"[scale] history: {history}")
    await _fill(conn, schema, 1000 - await _count(conn, schema), offset=0)
    small = await _workload(flow, cluster, conn, args.burst)
    small.update(await _reads(flow, conn, schema, args.reads))
    small["processes_in_store"] = await _count(conn, schema)
    say(f"[scale] small store: {small}")
    await _fill(conn, schema, args.big - await _count(conn, schema), offset=1000)
    big = await _workload(flow, cluster, conn, args.burst)
    big.update(await _reads(flow, conn, schema, args.reads))
    big["processes_in_store"] = await _count(conn, schema)
    say(f"[scale] big store: {big}")
    memory = await _memory(flow, cluster, conn, duration_s=args.memory_s)
    say(f"[scale] memory: {memory}")
    result = {
        "quick": args.quick,
        "history_5_ms": history["early_ms"],
        "history_1000_ms": history["late_ms"],
        "history_ratio": _ratio(history["late_ms"], history["early_ms"]),
        "store_small": small["processes_in_store"],
        "store_big": big["processes_in_store"],
        "tps_small": small["transitions_per_s"],
        "tps_big": big["transitions_per_s"],
        "tps_ratio": _ratio(big["transitions_per_s"], small["transitions_per_s"]),
        "hop_p50_small_ms": small["unloaded_p50_ms"],
        "hop_p50_big_ms": big["unloaded_p50_ms"],
        "hop_ratio": _ratio(big["unloaded_p50_ms"], small["unloaded_p50_ms"]),
        "load_p99_small_ms": small["load_p99_ms"],
        "load_p99_big_ms": big["load_p99_ms"],
        "get_p99_small_ms": small["get_p99_ms"],
        "get_p99_big_ms": big["get_p99_ms"],
        **{f"rss_{k}": v for k, v in memory.items()},
        "detail": {"history": history, "small": small, "big": big},
    }
    _table(result)
    return result


async def _history_length(
    flow: Stageflow, cluster: BenchCluster, conn: asyncpg.Connection, *, loops: int, rounds: int = 1000
) -> dict[str, Any]:
    """Per-transition time (interval between consecutive history rows) early and late in long histories."""
    ids = [(await flow.start(LoopFlow, {"rounds": rounds})).process_id for _ in range(loops)]
    if not await _wait_all(conn, cluster.namespace, ids, cluster, timeout_s=600, label="1,000-transition loops"):
        raise BenchError("the loop processes did not finish within 600 s")
    rows = await conn.fetch(
        f"SELECT process_id, version, (entry->>'at')::float8 AS at FROM {cluster.namespace}.history"
        " WHERE process_id = ANY($1) ORDER BY process_id, version", ids,
    )
    at: dict[str, dict[int, float]] = {}
    for r in rows:
        at.setdefault(r["process_id"], {})[r["version"]] = r["at"]

    def intervals(first: int, last: int) -> list[float]:
        return [(v[n] - v[n - 1]) * 1000 for v in at.values() for n in range(first, last + 1) if n in v and n - 1 in v]

    early, late = intervals(5, 54), intervals(rounds - 49, rounds)
    return {
        "processes": loops, "transitions": rounds, "early_ms": ms(percentile(early, 50)),
        "late_ms": ms(percentile(late, 50)), "early_p99_ms": ms(percentile(early, 99)),
        "late_p99_ms": ms(percentile(late, 99)),
    }


async def _workload(flow: Stageflow, cluster: BenchCluster, conn: asyncpg.Connection, burst: int) -> dict[str, Any]:
    """A few processes one at a time (hop latency), then a burst (throughput)."""
    schema = cluster.namespace
    unloaded: list[str] = []
    for i in range(30):
        unloaded.append((await flow.start(BenchFlow, {"n": i})).process_id)
        if not await _wait_all(conn, schema, unloaded[-1:], cluster, timeout_s=10, poll_s=0.002):
            raise BenchError("an unloaded process did not finish within 10 s")
    quiet = await phase_figures(conn, schema, unloaded)
    ids: list[str] = []
    await _start_many(flow, burst, 64, into=ids)
    if not await _wait_all(conn, schema, ids, cluster, timeout_s=300, label=f"burst of {burst}"):
        raise BenchError(f"the burst of {burst} did not finish within 300 s")
    loaded = await phase_figures(conn, schema, ids)
    return {
        "transitions_per_s": round(loaded.transitions_per_s, 1),
        "unloaded_p50_ms": ms(percentile(quiet.hops_ms, 50)),
        "unloaded_p99_ms": ms(percentile(quiet.hops_ms, 99)),
    }


async def _reads(flow: Stageflow, conn: asyncpg.Connection, schema: str, reads: int) -> dict[str, Any]:
    """``store.load`` and ``GET /processes/{id}`` of random processes in the store, one at a time."""
    from gateway.app import create_app  # the gateway's imports are only needed here

    rows = await conn.fetch(f"SELECT process_id FROM {schema}.processes ORDER BY random() LIMIT $1", reads)
    ids = [r["process_id"] for r in rows]
    loads: list[float] = []
    for process_id in ids:
        began = time.perf_counter()
        await flow.store.load(process_id)
        loads.append((time.perf_counter() - began) * 1000)
    gets: list[float] = []
    transport = httpx.ASGITransport(app=create_app(flow))
    async with httpx.AsyncClient(transport=transport, base_url="http://scale", headers={"X-API-Key": READ_KEY}) as c:
        for process_id in ids:
            began = time.perf_counter()
            response = await c.get(f"/processes/{process_id}")
            gets.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise BenchError(f"GET /processes/{process_id}: {response.status_code} {response.text[:200]}")
    return {
        "reads": len(ids),
        "load_p50_ms": ms(percentile(loads, 50)), "load_p99_ms": ms(percentile(loads, 99)),
        "get_p50_ms": ms(percentile(gets, 50)), "get_p99_ms": ms(percentile(gets, 99)),
    }


async def _memory(flow: Stageflow, cluster: BenchCluster, conn: asyncpg.Connection, *, duration_s: float) -> dict[str, Any]:
    """The worker's RSS every second while processes start at a steady rate (about 100 transitions/s)."""
    worker = cluster.workers[0]
    assert worker.proc is not None
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    started = 0
    while (elapsed := time.monotonic() - began) < duration_s:
        await asyncio.gather(*(flow.start(BenchFlow, {"n": started + i}) for i in range(20)))
        started += 20
        samples.append((elapsed, _rss_mb(worker.proc.pid)))
        cluster.check_alive()
        await asyncio.sleep(max(0.0, began + started / 20 - time.monotonic()))  # 20 processes a second
    settled = [mb for t, mb in samples if t >= duration_s * 0.2]  # after warm-up
    first, last = settled[0], settled[-1]
    return {
        "seconds": round(duration_s), "samples": len(samples), "processes": started,
        "start_mb": round(samples[0][1], 1), "after_warmup_mb": round(first, 1), "end_mb": round(last, 1),
        "max_mb": round(max(mb for _, mb in samples), 1),
        "growth_after_warmup_pct": round((last - first) / first * 100, 1),
    }


async def _fill(conn: asyncpg.Connection, schema: str, count: int, *, offset: int, chunk: int = 100_000) -> None:
    """Insert ``count`` completed ``bench_flow`` processes (five history rows each), oldest first."""
    if count <= 0:
        return
    now = time.time()
    done = 0
    while done < count:
        n = min(chunk, count - done)
        first = offset + done
        began = time.monotonic()
        await conn.execute(_FILL_SQL.format(s=schema), first, n, now, now + 30 * 86400)
        done += n
        say(f"[scale] filler: {done}/{count} processes ({time.monotonic() - began:.1f}s for {n})")
    await conn.execute(f"ANALYZE {schema}.processes; ANALYZE {schema}.history")


# Filler documents have the shape of a finished ``bench_flow`` process, so status reads can open them.
_FILL_SQL = """
WITH p AS (
    INSERT INTO {s}.processes (process_id, case_name, status, version, doc, expires_at, created_at, updated_at)
    SELECT 'filler-' || g, 'bench_flow', 'completed', 6,
           jsonb_build_object(
               'process_id', 'filler-' || g, 'case', 'bench_flow', 'case_version', 1, 'status', 'completed',
               'input', jsonb_build_object('n', g), 'stage', 'finish', 'version', 6,
               'created_at', $3 - 86400 + g * 0.001, 'updated_at', $3 - 86400 + g * 0.001 + 0.05,
               'client_key', null, 'store', jsonb_build_object('received', g, 'echo', jsonb_build_object('echo', g),
                                                               'recorded', true),
               'waiting', null, 'result', jsonb_build_object('n', g), 'error', null,
               'ended_at', $3 - 86400 + g * 0.001 + 0.05, 'attempts', 0, 'failures', '[]'::jsonb, 'outbox', '[]'::jsonb),
           $4, $3 - 86400 + g * 0.001, $3 - 86400 + g * 0.001 + 0.05
    FROM generate_series($1::int, $1::int + $2::int - 1) AS g
    RETURNING process_id, created_at)
INSERT INTO {s}.history (process_id, version, entry)
SELECT p.process_id, v, jsonb_build_object('version', v, 'event', CASE WHEN v = 1 THEN 'started' ELSE 'next' END,
                                           'stage', 'receive', 'at', p.created_at + v * 0.01, 'duration_ms', 0.1)
FROM p, generate_series(1, 5) AS v
"""


async def _count(conn: asyncpg.Connection, schema: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {schema}.processes")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _table(r: dict[str, Any]) -> None:
    rows = [
        ("per transition, 5th-54th of 1,000 (p50 ms)", r["history_5_ms"], ""),
        ("per transition, 951st-1,000th (p50 ms)", r["history_1000_ms"], f"x{r['history_ratio']}"),
        (f"transitions/s, {r['store_small']:,} processes in store", r["tps_small"], ""),
        (f"transitions/s, {r['store_big']:,} processes in store", r["tps_big"], f"x{r['tps_ratio']}"),
        (f"unloaded hop p50 ms, {r['store_small']:,}", r["hop_p50_small_ms"], ""),
        (f"unloaded hop p50 ms, {r['store_big']:,}", r["hop_p50_big_ms"], f"x{r['hop_ratio']}"),
        (f"store.load p99 ms, {r['store_small']:,} / {r['store_big']:,}", r["load_p99_small_ms"], r["load_p99_big_ms"]),
        (f"GET /processes/{{id}} p99 ms, {r['store_small']:,} / {r['store_big']:,}", r["get_p99_small_ms"],
         r["get_p99_big_ms"]),
        (f"worker RSS MB over {r['rss_seconds']} s: after warm-up / end", r["rss_after_warmup_mb"], r["rss_end_mb"]),
    ]
    say("")
    for label, a, b in rows:
        say(f"  {label:<62} {a!s:>10} {b!s:>10}")
    say("")


if __name__ == "__main__":
    arguments = parse_args()
    try:
        summary = asyncio.run(main(arguments))
    except BenchError as exc:
        say(f"[scale] error: {exc}")
        sys.exit(1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("[scale] interrupted; subprocesses, schema and queues were cleaned up")
        sys.exit(130)
    print(orjson.dumps(summary).decode(), flush=True)
