"""Workers and services SIGKILLed at random moments lose nothing and do nothing twice.

300 ``five_calls`` processes (five service round trips each, then a final stage) run through three
worker subprocesses and a services subprocess on the real RabbitMQ and PostgreSQL, about 60 at a time.
While they run, random workers get SIGKILL at random moments (and are restarted at once), and the
services process is killed and restarted too. Nothing in the test retries or republishes: anything lost
stays lost and shows (the framework's own recovery, redelivery and the outbox relay, is under test).

The verdict comes from witnesses the framework does not control:

* a PostgreSQL trigger records every UPDATE of a process row in ``ledger`` (no unique key): each process
  must show exactly one commit per stage, old versions 1..6, in stage order;
* the ``effects`` service writes one row per applied effect (no unique key): exactly one per
  (process, step) for steps 1..5;
* the ``history`` table holds versions 1..7 for each process.

Run with ``-s`` to see the figures line; set ``STAGEFLOW_FAULT_REPORT=/path.json`` to get it as JSON,
and ``STAGEFLOW_FAULT_SEED`` to replay a kill schedule.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from framework import Settings, Stageflow
from tests.support.cases import CASES, FiveCalls
from tests.support.cluster import Cluster
from tests.support.ledger import audit_five_calls, count_finished, install_ledger, queue_depth, wait_all_finished
from tests.support.processes import Managed

pytestmark = [pytest.mark.fault, pytest.mark.integration]

PROCESSES = 300
WORKERS = 3
WORKER_KILLS = 12  # SIGKILLs of random workers, each restarted at once
SERVICE_KILLS = 2  # SIGKILLs of the services process, spread among the worker kills
KILL_PAUSE_S = (0.2, 1.5)  # random pause before each kill
IN_FLIGHT = 60  # processes kept running (a backlog: each worker holds a full prefetch when killed)
FRESH_PER_KILL = 5  # processes started right before each kill, so none lands after the work is done
FINISH_WITHIN_S = 180.0  # every process finished, counted from the first start
RELAY_GRACE_S = "1.0"  # outboxes of killed workers are re-published by the relay after this
SEED = int(os.environ.get("STAGEFLOW_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=CASES, connection_name="fault-test") as flow:
        yield flow


async def test_random_sigkills_lose_nothing_and_double_nothing(
    flow: Stageflow, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    await install_ledger(pg, schema)  # the schema exists: the flow's store created it
    cluster = Cluster(
        settings, tmp_path, workers=WORKERS,
        STAGEFLOW_RELAY_GRACE_S=RELAY_GRACE_S, STAGEFLOW_TIMER_INTERVAL_S="0.25",
    )
    await cluster.start()  # waits until every worker and the services consume
    rng = random.Random(SEED)
    # The kill schedule: random workers, with the services process killed after a few of them.
    service_kill_after = set(rng.sample(range(2, WORKER_KILLS), SERVICE_KILLS))
    victims: list[Managed] = []
    for k in range(1, WORKER_KILLS + 1):
        victims.append(rng.choice(cluster.workers))
        if k in service_kill_after:
            victims.append(cluster.services[0])
    pauses = [rng.uniform(*KILL_PAUSE_S) for _ in victims]
    process_ids: list[str] = []
    numbers = iter(range(PROCESSES))
    kills: list[dict[str, Any]] = []
    kills_left = len(victims)

    async def start_processes(count: int) -> None:
        for n in itertools.islice(numbers, max(count, 0)):
            process_ids.append((await flow.start(FiveCalls, {"n": n})).process_id)

    async def feed() -> None:
        """While kills are to come, keep about IN_FLIGHT processes unfinished (holding back FRESH_PER_KILL
        for each kill); after the last kill, start all that are left (stuck processes must not stall it)."""
        while len(process_ids) < PROCESSES:
            budget = PROCESSES - FRESH_PER_KILL * kills_left - len(process_ids)
            counts = await flow.store.count_by_status(FiveCalls.name)
            unfinished = counts.get("running", 0) + counts.get("waiting", 0)
            if budget > 0 and (unfinished < IN_FLIGHT or kills_left == 0):
                await start_processes(budget if kills_left == 0 else min(budget, IN_FLIGHT - unfinished))
            else:
                await asyncio.sleep(0.05)

    async def kill(victim: Managed) -> None:
        await start_processes(FRESH_PER_KILL)  # so this kill surely lands while processes run
        await asyncio.to_thread(victim.kill)  # SIGKILL and reap
        victim.start()  # restart at once
        kills.append({"victim": victim.name, "at_s": round(time.monotonic() - started, 2),
                      "unfinished": len(process_ids) - await count_finished(pg, schema)})

    started = time.monotonic()
    feeding = asyncio.create_task(feed())
    try:
        for victim, pause in zip(victims, pauses, strict=True):
            await asyncio.sleep(pause)
            await kill(victim)
            kills_left -= 1
        await feeding
        finished = await wait_all_finished(pg, schema, PROCESSES, FINISH_WITHIN_S - (time.monotonic() - started))
        seconds = round(time.monotonic() - started, 1)
        crashed = [p.name for p in (*cluster.workers, *cluster.services) if not p.alive]
        report = await audit_five_calls(pg, schema, process_ids)
        parked = await queue_depth(settings.broker_url, f"{settings.queue_prefix}.parked")
        if not crashed:
            await cluster.wait_ready()  # restarted ones are up, so SIGTERM finds them ready to stop cleanly
    finally:
        feeding.cancel()
        codes = cluster.stop()

    worker_kills = sum(1 for k in kills if k["victim"].startswith("worker"))
    figures = {
        "seed": SEED, "processes": PROCESSES, "workers": WORKERS, "kills": worker_kills,
        "service_kills": len(kills) - worker_kills, "completed": report.completed, "lost": report.lost,
        "failed": report.failed, "doubled_stage_commits": report.doubled_stage_commits,
        "wrong_stage_sequences": report.wrong_stage_commits, "doubled_effects": report.doubled_effects,
        "missing_effects": report.missing_effects, "bad_histories": report.bad_histories,
        "relay_claims": report.relay_claims, "parked": parked, "seconds": seconds,
        "min_unfinished_at_kill": min(k["unfinished"] for k in kills),
    }
    print("\nFAULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
    if path := os.environ.get("STAGEFLOW_FAULT_REPORT"):
        text = json.dumps({**figures, "kill_log": kills, "audit": report.figures(),
                           "examples": report.examples, "exit_codes": codes}, indent=2)
        await asyncio.to_thread(Path(path).write_text, text)

    context = f"seed={SEED} figures={figures}\nexamples={report.examples}\n{cluster.logs()}"
    assert len(kills) == WORKER_KILLS + SERVICE_KILLS
    assert figures["min_unfinished_at_kill"] > 0, f"a kill landed after all work was done\n{context}"
    assert not crashed, f"processes died without being killed: {crashed}\n{context}"
    assert finished and seconds <= FINISH_WITHIN_S, f"not all finished within {FINISH_WITHIN_S} s\n{context}"
    assert report.lost == 0, context
    assert report.doubled_stage_commits == 0 and report.wrong_stage_commits == 0, context
    assert report.silent_overwrites == 0, context
    assert report.effects == PROCESSES * 5 and report.doubled_effects == 0 and report.missing_effects == 0, context
    assert report.stray_effects == 0, context
    assert report.bad_histories == 0, context
    assert report.stage_commits == PROCESSES * 6, context
    assert parked == 0, context
    assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}\n{context}"
    assert report.clean, context
