"""Many processes waiting for events, events sent concurrently, workers SIGKILLed meanwhile: each process resumes
once with its event's data, duplicates change nothing, events sent before the wait are taken by it, and the
processes no event reaches time out and take their failure path.

1,000 ``await_payment`` processes on RabbitMQ + PostgreSQL with two worker subprocesses; by index: a tenth get their
event twice (concurrently, same id, different data), a tenth get it before their wait (they sit in a 4 s timer
first), a tenth never get it (5 s timeout, then their ``on_failed`` stage), a tenth fail their resumed stage once
(the retry must see the same event), the rest get it once. Workers are SIGKILLed (and restarted) while the events
go out. Witnesses: the PostgreSQL ledger trigger (every UPDATE of a process row, no unique key) and the history.
Run with ``-s`` for the figures line.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from framework import Settings, Stageflow
from framework.signals import Delivery
from tests.support.cluster import Cluster
from tests.support.ledger import doubled_commits, install_ledger
from tests.support.signal_cases import CASES

pytestmark = [pytest.mark.fault, pytest.mark.integration]

PROCESSES = 1000
WORKERS = 2
KILLS = 5
FINISH_WITHIN_S = 120.0


def kind_of(n: int) -> str:
    return {0: "twice", 1: "early", 2: "never", 3: "fail_once"}.get(n % 10, "once")


async def count_unfinished(flow: Stageflow, ids: list[str]) -> int:
    return sum([not (await flow.get(pid)).status.finished for pid in ids])


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=CASES, connection_name="events-test") as flow:
        yield flow


async def test_events_resume_each_process_once_under_sigkills(
    flow: Stageflow, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = settings.store_schema
    await install_ledger(pg, schema)
    cluster = Cluster(settings, tmp_path, workers=WORKERS, services_modules=(), cases="tests.support.signal_cases",
                      STAGEFLOW_RELAY_GRACE_S="1.0", STAGEFLOW_TIMER_INTERVAL_S="0.25")
    await cluster.start()
    rng = random.Random(17)
    started = time.monotonic()
    kinds = [kind_of(n) for n in range(PROCESSES)]
    limit = asyncio.Semaphore(16)

    async def start(n: int) -> str:
        data = {"delay_s": 4.0} if kinds[n] == "early" else {"timeout_s": 5.0} if kinds[n] == "never" else {}
        async with limit:
            return (await flow.start("await_payment", data, client_key=f"order-{n}")).process_id

    async def send(n: int, pid: str, data: dict[str, Any]) -> Delivery:
        async with limit:
            return await flow.send_event(pid, "paid", data, event_id=f"pay-{n}")

    async def waiting_for_event(pid: str) -> None:
        while (await flow.get(pid)).waiting is None or (await flow.get(pid)).waiting.kind != "event":  # type: ignore[union-attr]
            await asyncio.sleep(0.2)

    async def deliver(n: int, pid: str) -> list[Delivery]:
        payload = {"n": n, **({"fail_once": True} if kinds[n] == "fail_once" else {})}
        if kinds[n] == "never":
            return []
        if kinds[n] != "early":
            await asyncio.wait_for(waiting_for_event(pid), 60)
        if kinds[n] == "twice":
            return list(await asyncio.gather(send(n, pid, payload), send(n, pid, {"n": n, "duplicate": True})))
        return [await send(n, pid, payload)]

    async def kill_workers() -> list[int]:
        """SIGKILL a random worker (and restart it) now and then; how many processes were unfinished at each."""
        unfinished_at_kill = []
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            victim = rng.choice(cluster.workers)
            await asyncio.to_thread(victim.kill)
            victim.start()
            counts = await flow.store.count_by_status("await_payment")
            unfinished_at_kill.append(counts.get("running", 0) + counts.get("waiting", 0))
        return unfinished_at_kill

    try:
        ids = list(await asyncio.gather(*(start(n) for n in range(PROCESSES))))
        killing = asyncio.create_task(kill_workers())
        deliveries = await asyncio.gather(*(deliver(n, pid) for n, pid in enumerate(ids)))
        kills = await killing
        deadline = started + FINISH_WITHIN_S
        while (unfinished := await count_unfinished(flow, ids)) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        seconds = round(time.monotonic() - started, 1)
        docs = [await flow.get(pid) for pid in ids]
        histories = [await flow.store.history(pid) for pid in ids]
        doubled = await doubled_commits(pg, schema)
        paid_completions = Counter(r["process_id"] for r in await pg.fetch(
            f"SELECT process_id FROM {schema}.ledger WHERE old_stage = 'paid' AND new_status = 'completed'"))
        crashed = [p.name for p in cluster.workers if not p.alive]
        await cluster.wait_ready()
    finally:
        codes = cluster.stop()

    wrong: list[str] = []
    figures: Counter[str] = Counter()
    for n, (doc, history, sent) in enumerate(zip(docs, histories, deliveries, strict=True)):
        kind, resumes = kinds[n], sum(1 for e in history if e.get("event") == "event")
        accepted = [d for d in sent if not d.duplicate]
        if kind == "never":
            ok = doc.result == {"expired": "no event 'paid' within 5 s"} and resumes == 0
            figures["timed_out_took_their_path"] += ok
        else:
            expected = {"event": {"n": n, **({"fail_once": True} if kind == "fail_once" else {})},
                        "event_id": f"pay-{n}", "attempt": 2 if kind == "fail_once" else 1}
            ok = (len(accepted) == 1 and resumes == 1 and paid_completions[doc.process_id] == 1
                  and doc.result == expected)
            figures["resumed_once_with_their_data"] += ok
            figures["duplicates_that_changed_nothing"] += sum(d.duplicate for d in sent)
            figures["early_events_taken_by_the_wait"] += ok and kind == "early" and not accepted[0].resumed
            figures["retries_that_saw_the_event"] += ok and kind == "fail_once"
        if not ok:
            wrong.append(f"{kind} {doc.process_id} {doc.status} {doc.result} resumes={resumes} sent={sent}")
    line = {"processes": PROCESSES, "workers": WORKERS, "kills": len(kills), "min_unfinished_at_kill": min(kills),
            **figures, "wrong": len(wrong),
            "unfinished": unfinished, "doubled_commits": doubled, "seconds": seconds}
    print("\nEVENTS " + " ".join(f"{k}={v}" for k, v in line.items()))

    context = f"{line}\n{wrong[:5]}\n{cluster.logs()}"
    assert min(kills) > 0, f"a kill landed after all work was done\n{context}"
    assert not crashed and unfinished == 0, context
    assert not wrong and doubled == 0, context
    assert figures["timed_out_took_their_path"] == kinds.count("never"), context
    assert figures["duplicates_that_changed_nothing"] == kinds.count("twice"), context
    assert figures["early_events_taken_by_the_wait"] == kinds.count("early"), context
    assert figures["retries_that_saw_the_event"] == kinds.count("fail_once"), context
    assert all(code == 0 for code in codes.values()), codes
