"""``python -m bench [--quick]``: run the benchmark and print one JSON line on stdout.

For each worker count (1, then 2) a fresh deployment is booted (worker subprocesses, one services
subprocess, a new schema and queue prefix), and measured once every consumer is attached, so start-up
is not measured:

1. warm-up: a few processes, left out of every figure;
2. unloaded: processes run one at a time, for latency without queueing;
3. loaded: a burst of processes started together, for throughput (and latency under load).

Top-level figures: ``transitions_per_s`` is the loaded run with the most workers; ``p50_ms``/``p99_ms``
are its unloaded hop latencies (see ``bench/measure.py`` for the definitions). ``runs`` has every figure
per worker count. A benchmark, not a test: nothing is asserted about speed.

Servers: ``STAGEFLOW_TEST_BROKER_URL`` / ``STAGEFLOW_TEST_STORE_URL`` (default: the local ones, as for the
tests). Other ``STAGEFLOW_*`` variables in the environment (e.g. ``STAGEFLOW_PREFETCH``) reach the
workers, so a setting can be compared by running the benchmark twice.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

import orjson

from bench.cases import STAGES
from bench.cluster import BenchError
from bench.run import Plan, run_cluster, say


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer processes (about a minute)")
    parser.add_argument("--processes", type=int, default=None, help="processes in the loaded burst")
    parser.add_argument("--unloaded", type=int, default=None, help="processes run one at a time")
    parser.add_argument("--workers", type=str, default="1,2", help="worker counts to run, comma-separated")
    args = parser.parse_args(argv)
    if args.processes is None:
        args.processes = 300 if args.quick else 2000
    if args.unloaded is None:
        args.unloaded = 30 if args.quick else 100
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers takes worker counts like 1,2")
    if not args.worker_counts or min(args.worker_counts) < 1 or args.processes < 1 or args.unloaded < 0:
        parser.error("need at least one worker count >= 1, --processes >= 1 and --unloaded >= 0")
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM (e.g. from a CI timeout) tears down like Ctrl-C: subprocesses, schema and queues.
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    began = time.monotonic()
    plan = Plan(
        processes=args.processes,
        unloaded=args.unloaded,
        load_timeout_s=45.0 if args.quick else 120.0,
        unloaded_budget_s=15.0 if args.quick else 30.0,
    )
    say(
        f"[bench] {plan.processes} processes of {STAGES} stages (one a service call) per run, "
        f"{plan.unloaded} unloaded; worker counts {args.worker_counts}"
    )
    runs = [await run_cluster(plan, workers) for workers in args.worker_counts]
    top = max(runs, key=lambda r: r["workers"])
    return {
        "processes": plan.processes,
        "stages": STAGES,
        "workers": top["workers"],
        "transitions_per_s": top["transitions_per_s"],
        "p50_ms": top["unloaded_p50_ms"],
        "p99_ms": top["unloaded_p99_ms"],
        "loaded_p50_ms": top["loaded_p50_ms"],
        "loaded_p99_ms": top["loaded_p99_ms"],
        "unloaded_processes": top["unloaded_processes"],
        "quick": args.quick,
        "seconds": round(time.monotonic() - began, 1),
        "runs": runs,
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
    print(orjson.dumps(summary).decode(), flush=True)
