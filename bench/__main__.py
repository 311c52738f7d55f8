"""``python -m bench [--quick | --tiny]``: Stageflow beside Celery, Dramatiq and a hand-written aio-pika loop.

Run it with ``.bench-venv/bin/python`` (``make bench`` builds that environment: Stageflow plus the pinned
peers of ``bench/requirements.txt``). Every system runs chains of 5 no-op stages on the same RabbitMQ and
PostgreSQL with 2 worker subprocesses; each run is deployed fresh (own schema and queues, removed after).
Progress goes to stderr; stdout gets a Markdown table of medians, then one JSON line.

Servers: ``STAGEFLOW_TEST_BROKER_URL`` / ``STAGEFLOW_TEST_STORE_URL`` (default: the local ones, as for the
tests). ``BENCH_RAW_QUEUE_TYPE=classic`` gives the hand-written loop classic queues instead of quorum
queues (Stageflow's), as Celery and Dramatiq use. Other ``STAGEFLOW_*`` variables in the environment
(e.g. ``STAGEFLOW_PREFETCH``) reach Stageflow's workers.

A benchmark, not a test: nothing is asserted about speed, but a chain that does not finish (or a worker
that dies) fails the run with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import orjson

from bench.compare import Comparison, compare, table
from bench.harness import PEERS, Plan
from bench.latency import LatencyPlan
from bench.peers.base import STAGES, BenchError, say

# chains per burst, repetitions, warm-up chains, burst timeout, unloaded processes and budget, half-load seconds
MODES: dict[str, tuple[int, int, int, float, int, float, float]] = {
    "full": (1000, 3, 20, 240.0, 200, 30.0, 15.0),
    "quick": (300, 1, 10, 90.0, 50, 10.0, 5.0),
    "tiny": (5, 1, 2, 30.0, 5, 5.0, 1.0),  # proves every system works (the test suite runs it)
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one repetition of 300 chains (under 3 minutes)")
    size.add_argument("--tiny", action="store_true", help="a few chains per system: proves it works")
    parser.add_argument("--chains", type=int, help="chains per burst (default: by mode)")
    parser.add_argument("--repetitions", type=int, help="interleaved repetitions (default: by mode)")
    parser.add_argument("--systems", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--no-latency", action="store_true", help="skip Stageflow's latency phases")
    args = parser.parse_args(argv)
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in args.systems if s not in PEERS]
    if unknown or not args.systems:
        parser.error(f"unknown system(s) {unknown}; choose from {', '.join(PEERS)}")
    if (args.chains is not None and args.chains < 1) or (args.repetitions is not None and args.repetitions < 1):
        parser.error("--chains and --repetitions must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def job(args: argparse.Namespace) -> Comparison:
    chains, repetitions, warmup, timeout_s, unloaded, unloaded_budget_s, half_load_s = MODES[args.mode]
    with_latency = not args.no_latency and "stageflow" in args.systems
    return Comparison(
        plan=Plan(chains=args.chains or chains, workers=args.workers, warmup=warmup, timeout_s=timeout_s),
        latency=LatencyPlan(unloaded, unloaded_budget_s, half_load_s, workers=args.workers) if with_latency else None,
        repetitions=args.repetitions or repetitions,
        systems=args.systems,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM (e.g. from a CI timeout) tears down like Ctrl-C: subprocesses, schemas and queues.
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    began = time.monotonic()
    comparison = job(args)
    say(f"[bench] {args.mode}: {', '.join(comparison.systems)}; {comparison.plan.chains} chains of {STAGES} "
        f"no-op stages, {comparison.plan.workers} workers each, {comparison.repetitions} repetition(s)")
    result = await compare(comparison)
    return {
        **{k: v for k, v in result.items() if k not in ("medians", "runs", "cpu_s")},
        "cpu_s": result["cpu_s"],
        "chains": comparison.plan.chains,
        "stages": STAGES,
        "workers": comparison.plan.workers,
        "repetitions": comparison.repetitions,
        "mode": args.mode,
        "raw_queue_type": os.environ.get("BENCH_RAW_QUEUE_TYPE", "quorum"),
        "seconds": round(time.monotonic() - began, 1),
        "medians": result["medians"],
        "runs": result["runs"],
    }


if __name__ == "__main__":
    arguments = parse_args()
    try:
        summary = asyncio.run(main(arguments))
    except BenchError as exc:
        say(f"[bench] error: {exc}")
        sys.exit(1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("[bench] interrupted; subprocesses, schemas and queues were cleaned up")
        sys.exit(130)
    print(table(summary), flush=True)
    print(orjson.dumps(summary).decode(), flush=True)
