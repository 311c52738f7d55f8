"""``python -m chaos [--quick] [--only NAMES] [--seed N]``: run the fault scenarios, print the table and
one JSON line with the totals on stdout; progress and subprocess logs of failed scenarios go to stderr.

Exit code: 0 if every scenario kept its promises, 1 if anything was lost or applied twice or a scenario's
own expectation failed, 2 if the servers are unreachable, 130 if interrupted (everything is cleaned up:
subprocesses, schemas, queues, and RabbitMQ/PostgreSQL are left running).

Servers: ``STAGEFLOW_TEST_BROKER_URL`` / ``STAGEFLOW_TEST_STORE_URL`` (default: the local ones, as for the
tests); the restart scenario drives the local ones with ``rabbitmqctl`` and ``pg_ctlcluster``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson

from chaos import servers
from chaos.deploy import say
from chaos.report import Result, table, totals
from chaos.scenarios import FULL, QUICK, SCENARIO_NAMES, SCENARIOS, run_scenario
from framework.logs import configure_logging
from tests.support.servers import unreachable

# Whole-run bounds: a scenario starts only with this much left, and gets at most what is left. The cluster
# scenarios add about 65-80 s (node kill: the cluster's start is 30-40 s of it) and 20 s (failover) in quick.
BUDGET_S = {"full": 1200.0, "quick": 450.0}
MIN_LEFT_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description="Stageflow's fault scenarios on the local RabbitMQ and PostgreSQL.")
    parser.add_argument("--quick", action="store_true", help="smaller numbers (about 4-5 minutes)")
    parser.add_argument("--only", default=",".join(SCENARIO_NAMES),
                        help=f"scenarios to run, comma-separated (default: all of {', '.join(SCENARIO_NAMES)})")
    parser.add_argument("--seed", type=int, default=None, help="replay the random choices of a run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the subprocess logs even if all passed")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(args.names) - set(SCENARIO_NAMES))
    if unknown or not args.names:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIO_NAMES)}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    return args



async def main(args: argparse.Namespace, log_root: Path) -> list[Result]:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    configure_logging("CRITICAL")  # the driver's own logs (e.g. "outbox left for the relay" while
    # RabbitMQ is down) are expected noise here; the workers' logs are in their log files
    problem = await unreachable()
    if problem:
        say(f"[chaos] {problem}; run `make services` first")
        sys.exit(2)
    profile = QUICK if args.quick else FULL
    budget = BUDGET_S[profile.name]
    began = time.monotonic()
    say(f"[chaos] {profile.name} run, seed {args.seed}, scenarios {', '.join(args.names)}; logs in {log_root}")
    results = []
    for scenario in SCENARIOS:
        if scenario.name not in args.names:
            continue
        left = budget - (time.monotonic() - began)
        if left < MIN_LEFT_S:
            skipped = Result(scenario.name, scenario.title)
            skipped.problems.append(f"not run: the {budget:g} s budget of the whole run was used up")
            results.append(skipped)
            continue
        limited = dataclasses.replace(profile, scenario_limit_s=min(profile.scenario_limit_s, left))
        rng = random.Random(f"{args.seed}/{scenario.name}")
        results.append(await run_scenario(scenario, limited, log_root, rng))
    return results


if __name__ == "__main__":
    arguments = parse_args()
    logs = Path(tempfile.mkdtemp(prefix="stageflow-chaos-"))
    try:
        outcome = asyncio.run(main(arguments, logs))
    except (KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(servers.ensure_servers())
        say(f"[chaos] interrupted; subprocesses, schemas and queues were cleaned up (logs in {logs})")
        sys.exit(130)
    summary = totals(outcome, quick=arguments.quick, seed=arguments.seed)
    passed = summary["ok"]
    if passed and not arguments.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        say(f"[chaos] subprocess logs kept in {logs}")
    print(table(outcome), flush=True)
    print(orjson.dumps(summary, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)  # e.g. HTTP statuses
    sys.exit(0 if passed else 1)
