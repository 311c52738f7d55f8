"""``python -m bench.scale`` (``make bench-scale``): does a transition cost the same as the work grows?

Issue 6, goal 3, on one Stageflow worker subprocess (:class:`bench.peers.stageflow.StageflowPeer`: fresh
schema and queues, removed afterwards):

1. **history length**: ``bench_loop`` processes run 1,000 transitions each; the time per transition of
   their 5th-54th transitions is compared with that of their 951st-1,000th (from the history rows);
2. **store size**: the same burst of ``bench_chain`` processes (and a few run one at a time) with 1,000
   processes in the store, then again after filler rows bring it to 1,000,000 (bulk-inserted in SQL:
   completed processes with six history rows each; 100,000 with ``--quick``);
3. **status reads** at both sizes: ``store.load`` and ``GET /processes/{id}`` (the gateway in-process,
   through httpx's ASGI transport) of random processes, one at a time;
4. **worker memory**: the worker's RSS sampled every second while processes are started at a steady
   rate (10 minutes; 40 s with ``--quick``).

``--tiny`` shrinks everything (proves the script works; the test suite runs it). Prints a table on
stderr and one JSON line on stdout. A measurement, not a test: nothing is asserted about speed.
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

from bench.cases import LoopFlow
from bench.harness import wait_done
from bench.latency import unloaded_hops
from bench.measure import ms, percentile, phase_figures
from bench.peers.base import BenchError, say
from bench.peers.stageflow import StageflowPeer

READ_KEY = "bench-scale-read-key-0123456789abcdef"  # 32 bytes at least
LOOP_IDS = 10_000_000  # chain numbers of the loop processes, apart from the bench_chain ones
SIZES = {  # store size, loop processes and transitions, burst, memory seconds, reads
    "full": (1_000_000, 10, 1000, 1000, 600.0, 5000),
    "quick": (100_000, 4, 1000, 300, 40.0, 1000),
    "tiny": (2_000, 1, 60, 20, 3.0, 20),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller store and a short memory run")
    size.add_argument("--tiny", action="store_true", help="everything tiny: proves it works")
    args = parser.parse_args(argv)
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.big, args.loops, args.rounds, args.burst, args.memory_s, args.reads = SIZES[args.mode]
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stageflow-scale-") as tmp:
        peer = StageflowPeer(Path(tmp), workers=1)
        peer.settings.api_keys_read = [READ_KEY]
        async with peer:
            result = await _measure(args, peer)
            result["namespace"] = peer.namespace  # dropped by now
    result["seconds"] = round(time.monotonic() - began, 1)
    return result


async def _measure(args: argparse.Namespace, peer: StageflowPeer) -> dict[str, Any]:
    conn, schema = _conn(peer), peer.namespace
    history = await _history_length(peer, loops=args.loops, rounds=args.rounds)
    say(f"[scale] history: {history}")
    small_size = min(1000, args.big // 2)
    await _fill(conn, schema, small_size - await _count(conn, schema), offset=0)
    small = await _workload(peer, args.burst, first=0)
    small.update(await _reads(peer, args.reads))
    small["processes_in_store"] = await _count(conn, schema)
    say(f"[scale] small store: {small}")
    await _fill(conn, schema, args.big - await _count(conn, schema), offset=small_size)
    big = await _workload(peer, args.burst, first=1_000_000)
    big.update(await _reads(peer, args.reads))
    big["processes_in_store"] = await _count(conn, schema)
    say(f"[scale] big store: {big}")
    memory = await _memory(peer, duration_s=args.memory_s)
    say(f"[scale] memory: {memory}")
    result = {
        "mode": args.mode,
        "history_transitions": args.rounds,
        "history_5_ms": history["early_ms"],
        "history_late_ms": history["late_ms"],
        "history_ratio": _ratio(history["late_ms"], history["early_ms"]),
        "store_small": small["processes_in_store"],
        "store_big": big["processes_in_store"],
        "tps_small": small["transitions_per_s"],
        "tps_big": big["transitions_per_s"],
        "tps_ratio": _ratio(big["transitions_per_s"], small["transitions_per_s"]),
        "hop_p50_small_ms": small["p50_ms"],
        "hop_p50_big_ms": big["p50_ms"],
        "hop_ratio": _ratio(big["p50_ms"], small["p50_ms"]),
        "load_p99_small_ms": small["load_p99_ms"],
        "load_p99_big_ms": big["load_p99_ms"],
        "get_p99_small_ms": small["get_p99_ms"],
        "get_p99_big_ms": big["get_p99_ms"],
        **{f"rss_{k}": v for k, v in memory.items()},
        "detail": {"history": history, "small": small, "big": big},
    }
    _table(result)
    return result


def _conn(peer: StageflowPeer) -> asyncpg.Connection:
    if peer.conn is None:
        raise BenchError("the peer is not open")
    return peer.conn


async def _history_length(peer: StageflowPeer, *, loops: int, rounds: int) -> dict[str, Any]:
    """Per-transition time (interval between consecutive history rows) early and late in long histories."""
    assert peer.flow is not None
    keys = range(LOOP_IDS, LOOP_IDS + loops)
    for key in keys:
        peer.process_ids[key] = (await peer.flow.start(LoopFlow, {"rounds": rounds})).process_id
    await wait_done(peer, keys, timeout_s=600, poll_s=0.25, label=f"{rounds}-transition loops")
    ids = [peer.process_ids[key] for key in keys]
    rows = await _conn(peer).fetch(
        f"SELECT process_id, version, (entry->>'at')::float8 AS at FROM {peer.namespace}.history"
        " WHERE process_id = ANY($1) ORDER BY process_id, version", ids,
    )
    at: dict[str, dict[int, float]] = {}
    for r in rows:
        at.setdefault(r["process_id"], {})[r["version"]] = r["at"]

    def intervals(first: int, last: int) -> list[float]:
        return [(v[n] - v[n - 1]) * 1000 for v in at.values() for n in range(first, last + 1) if n in v and n - 1 in v]

    window = min(50, rounds // 4)
    early, late = intervals(5, 5 + window - 1), intervals(rounds - window + 1, rounds)
    return {
        "processes": loops, "transitions": rounds, "early_ms": ms(percentile(early, 50)),
        "late_ms": ms(percentile(late, 50)), "early_p99_ms": ms(percentile(early, 99)),
        "late_p99_ms": ms(percentile(late, 99)), "window": window, "late_intervals": len(late),
    }


async def _workload(peer: StageflowPeer, burst: int, *, first: int) -> dict[str, Any]:
    """A few processes one at a time (hop latency), then a burst (throughput)."""
    unloaded = await unloaded_hops(peer, range(first, first + 30), budget_s=30.0)
    ids = range(first + 1000, first + 1000 + burst)
    await peer.start_chains(ids)
    await wait_done(peer, ids, timeout_s=300, poll_s=0.05, label=f"burst of {burst}")
    loaded = await phase_figures(_conn(peer), peer.namespace, [peer.process_ids[i] for i in ids])
    return {"transitions_per_s": round(loaded.transitions_per_s, 1), **unloaded}


async def _reads(peer: StageflowPeer, reads: int) -> dict[str, Any]:
    """``store.load`` and ``GET /processes/{id}`` of random processes in the store, one at a time."""
    from gateway.app import create_app  # the gateway's imports are only needed here

    assert peer.flow is not None
    rows = await _conn(peer).fetch(
        f"SELECT process_id FROM {peer.namespace}.processes ORDER BY random() LIMIT $1", reads
    )
    ids = [r["process_id"] for r in rows]
    loads: list[float] = []
    for process_id in ids:
        began = time.perf_counter()
        await peer.flow.store.load(process_id)
        loads.append((time.perf_counter() - began) * 1000)
    gets: list[float] = []
    transport = httpx.ASGITransport(app=create_app(peer.flow))
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


async def _memory(peer: StageflowPeer, *, duration_s: float) -> dict[str, Any]:
    """The worker's RSS every second while processes start at a steady rate (20/s, 100 transitions/s)."""
    worker = peer.processes[0].proc
    assert worker is not None
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    started = 0
    first = 2_000_000  # chain numbers apart from the workload's
    while (elapsed := time.monotonic() - began) < duration_s:
        await peer.start_chains(range(first + started, first + started + 20))
        started += 20
        samples.append((elapsed, _rss_mb(worker.pid)))
        peer.check_alive()
        await asyncio.sleep(max(0.0, began + started / 20 - time.monotonic()))
    await wait_done(peer, range(first, first + started), timeout_s=120, poll_s=0.1, label=None)
    settled = [mb for t, mb in samples if t >= duration_s * 0.2] or [samples[-1][1]]  # after warm-up
    first_mb, last_mb = settled[0], settled[-1]
    return {
        "seconds": round(duration_s), "samples": len(samples), "processes": started,
        "start_mb": round(samples[0][1], 1), "after_warmup_mb": round(first_mb, 1), "end_mb": round(last_mb, 1),
        "max_mb": round(max(mb for _, mb in samples), 1),
        "growth_after_warmup_pct": round((last_mb - first_mb) / first_mb * 100, 1),
    }


async def _fill(conn: asyncpg.Connection, schema: str, count: int, *, offset: int, chunk: int = 100_000) -> None:
    """Insert ``count`` completed ``bench_chain`` processes (six history rows each), oldest first."""
    if count <= 0:
        return
    now = time.time()
    done = 0
    while done < count:
        n = min(chunk, count - done)
        began = time.monotonic()
        await conn.execute(_FILL_SQL.format(s=schema), offset + done, n, now, now + 30 * 86400)
        done += n
        say(f"[scale] filler: {done}/{count} processes ({time.monotonic() - began:.1f}s for {n})")
    await conn.execute(f"ANALYZE {schema}.processes; ANALYZE {schema}.history")


# Filler documents have the shape of a finished ``bench_chain`` process, so status reads can open them.
_FILL_SQL = """
WITH p AS (
    INSERT INTO {s}.processes (process_id, case_name, status, version, doc, expires_at, created_at, updated_at)
    SELECT 'filler-' || g, 'bench_chain', 'completed', 6,
           jsonb_build_object(
               'process_id', 'filler-' || g, 'case', 'bench_chain', 'case_version', 1, 'status', 'completed',
               'input', jsonb_build_object('n', g), 'stage', 'five', 'version', 6,
               'created_at', $3 - 86400 + g * 0.001, 'updated_at', $3 - 86400 + g * 0.001 + 0.05,
               'client_key', null, 'store', '{{}}'::jsonb, 'waiting', null,
               'result', jsonb_build_object('n', g), 'error', null,
               'ended_at', $3 - 86400 + g * 0.001 + 0.05, 'attempts', 0, 'failures', '[]'::jsonb,
               'parent', null, 'outbox', '[]'::jsonb),
           $4, $3 - 86400 + g * 0.001, $3 - 86400 + g * 0.001 + 0.05
    FROM generate_series($1::int, $1::int + $2::int - 1) AS g
    RETURNING process_id, created_at)
INSERT INTO {s}.history (process_id, version, entry)
SELECT p.process_id, v, jsonb_build_object(
           'version', v, 'event', CASE WHEN v = 1 THEN 'started' WHEN v = 6 THEN 'completed' ELSE 'next' END,
           'stage', (ARRAY['one', 'one', 'two', 'three', 'four', 'five'])[v], 'at', p.created_at + v * 0.01,
           'duration_ms', 0.1)
FROM p, generate_series(1, 6) AS v
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
    n = r["history_transitions"]
    rows = [
        (f"per transition, 5th-54th of {n:,} (p50 ms)", r["history_5_ms"], ""),
        (f"per transition, last 50 of {n:,} (p50 ms)", r["history_late_ms"], f"x{r['history_ratio']}"),
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
        say("[scale] interrupted; the worker, schema and queues were cleaned up")
        sys.exit(130)
    print(orjson.dumps(summary).decode(), flush=True)
