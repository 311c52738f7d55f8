"""Every attempt of a stage sees what resumed it (DESIGN.md, contract point 7).

A stage resumed by a service reply, by the join of a fan-out, or sent to its ``on_failed`` path, is run again
after an exception (its Retry policy), after its ``timeout_s``, or after its worker was SIGKILLed mid-stage
(the message is redelivered to another worker). Each of those runs must see exactly the reply, fan-in or
failure the first run saw; the process then completes.

Two worker subprocesses and the ``effects`` service run on the real RabbitMQ and PostgreSQL. Each run of the
watched stage writes a row to ``sightings`` (its attempt, its pid, what it saw) before it does anything else,
committed, so the table is the witness of every attempt (a failed attempt's ``ctx.store`` is not kept) and, for
the kill tests, the signal that the run is under way: the test then SIGKILLs the worker with that pid. See
``tests.support.resumption_cases``. One unit test runs the first scenario on the in-memory harness
(``framework.testing.run_cases``), as users test their cases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from framework import ProcessDocument, Settings, Stageflow, Status
from framework.messages import ServiceCommand
from framework.service import ServiceTransaction
from framework.testing import run_cases
from tests.support.cluster import Cluster, wait_finished
from tests.support.resumption_cases import (
    CASES, MEMORY_SIGHTINGS, SIGHTINGS_SQL, STAGE_TIMEOUT_S, JoinsFanOut, RecoversFromFailure, ResumedByReply,
    ResumedByReplyTimed,
)

STEP = 7301  # the command's payload; the effects service answers {"step": STEP, "ok": True}
REPLY_DATA = {"step": STEP, "ok": True}
REPLY = {"api": "effects", "ok": True, "data": REPLY_DATA, "error": None}  # what ctx.reply must be, every attempt
FAN_IN = {  # what ctx.fan_in must be, every attempt
    "total": 3, "succeeded": 3, "failed": 0, "errors": {},
    "results": [{"step": s, "ok": True} for s in JoinsFanOut.STEPS],
}
FAILURE = {"stage": "work", "reason": f"NonRetryableError: {RecoversFromFailure.REASON}"}  # ctx.failure, every attempt
FINISH_WITHIN_S = 30.0


# -- the deployment --------------------------------------------------------------------------------------


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=CASES, connection_name="resumption-test") as flow:
        yield flow


@pytest.fixture
async def cluster(flow: Stageflow, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
                  ) -> AsyncIterator[Cluster]:
    """Two worker subprocesses and the ``effects`` service. The relay grace is long so that no relayed copy of a
    command (hence no second reply) can race the runs under test; timers fire every 0.2 s (the settings)."""
    await pg.execute(f"SET search_path TO {settings.store_schema}")  # the flow's store created the schema
    await pg.execute(SIGHTINGS_SQL)
    cluster = Cluster(settings, tmp_path, workers=2, cases="tests.support.resumption_cases",
                      STAGEFLOW_RELAY_GRACE_S="30")
    await cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# -- witnesses -------------------------------------------------------------------------------------------


async def sightings(pg: asyncpg.Connection, process_id: str, stage: str) -> list[dict[str, Any]]:
    rows = await pg.fetch(
        "SELECT run, attempt, pid, seen::text AS seen FROM sightings WHERE process_id = $1 AND stage = $2"
        " ORDER BY run", process_id, stage,
    )
    return [{"run": r["run"], "attempt": r["attempt"], "pid": r["pid"], "seen": orjson.loads(r["seen"])}
            for r in rows]


def runs(seen: list[dict[str, Any]]) -> list[tuple[int, int, Any]]:
    """(run, ctx.attempt, what it saw) for each run of the stage."""
    return [(s["run"], s["attempt"], s["seen"]) for s in seen]


def outcome(doc: ProcessDocument) -> str:
    return f"process {doc.process_id} ended {doc.status.value}: error={doc.error}"


async def kill_run(cluster: Cluster, pg: asyncpg.Connection, process_id: str, stage: str, run: int) -> int:
    """Wait until run ``run`` of ``stage`` is under way (its sighting is committed and it sleeps), then SIGKILL
    the worker running it; returns that worker's pid."""
    deadline = time.monotonic() + FINISH_WITHIN_S
    while (pid := await pg.fetchval("SELECT pid FROM sightings WHERE process_id = $1 AND stage = $2 AND run = $3",
                                    process_id, stage, run)) is None:
        assert time.monotonic() < deadline, f"run {run} of {stage} never started\n{cluster.logs()}"
        await asyncio.sleep(0.02)
    [victim] = [w for w in cluster.workers if w.proc is not None and w.proc.pid == pid]
    await asyncio.to_thread(victim.kill)
    return pid


async def effects_applied(pg: asyncpg.Connection, process_id: str) -> list[int]:
    return sorted(r["step"] for r in await pg.fetch("SELECT step FROM effects WHERE process_id = $1", process_id))


# -- 1. an exception ---------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_retry_after_an_exception_sees_the_same_reply(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(ResumedByReply, {"step": STEP, "plan": ["raise"]})
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "use_reply")
    assert runs(seen) == [(1, 1, REPLY), (2, 2, REPLY)], outcome(done)
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"reply": REPLY_DATA, "attempt": 2}
    assert await effects_applied(pg, doc.process_id) == [STEP]  # the command was applied once


# -- 2. a stage timeout ------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_retry_after_a_stage_timeout_sees_the_same_reply(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(ResumedByReplyTimed, {"step": STEP, "plan": ["slow"]})
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "use_reply")
    errors = [h.get("error") for h in await flow.store.history(doc.process_id) if h.get("error")]
    assert errors[:1] == [f"stage timed out after {STAGE_TIMEOUT_S:g} s"], errors  # attempt 1 did time out
    assert runs(seen) == [(1, 1, REPLY), (2, 2, REPLY)], outcome(done)
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"reply": REPLY_DATA, "attempt": 2}


# -- 3. a worker SIGKILLed mid-stage -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.fault
async def test_the_redelivered_first_run_after_a_sigkill_sees_the_same_reply(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(ResumedByReply, {"step": STEP, "plan": ["hang"]})
    victim = await kill_run(cluster, pg, doc.process_id, "use_reply", run=1)  # the run the reply resumed
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "use_reply")
    assert runs(seen) == [(1, 1, REPLY), (2, 1, REPLY)], outcome(done)  # a crash is not a failed attempt
    assert seen[1]["pid"] != victim, "the redelivered reply must have run on the other worker"
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"reply": REPLY_DATA, "attempt": 1}
    assert await effects_applied(pg, doc.process_id) == [STEP]


@pytest.mark.integration
@pytest.mark.fault
async def test_the_redelivered_retry_after_a_sigkill_sees_the_same_reply(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(ResumedByReply, {"step": STEP, "plan": ["raise", "hang"]})
    victim = await kill_run(cluster, pg, doc.process_id, "use_reply", run=2)  # attempt 2, after attempt 1 raised
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "use_reply")
    assert runs(seen) == [(1, 1, REPLY), (2, 2, REPLY), (3, 2, REPLY)], outcome(done)
    assert seen[2]["pid"] != victim, "the redelivered retry must have run on the other worker"
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"reply": REPLY_DATA, "attempt": 2}
    assert await effects_applied(pg, doc.process_id) == [STEP]


# -- 4. the joining stage of a fan-out: an exception, then a SIGKILL -------------------------------------------


@pytest.mark.integration
@pytest.mark.fault
async def test_a_joining_stage_sees_the_same_fan_in_after_a_retry_and_a_sigkill(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(JoinsFanOut, {"plan": ["raise", "hang"]})
    victim = await kill_run(cluster, pg, doc.process_id, "join", run=2)  # attempt 2, after attempt 1 raised
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "join")
    assert runs(seen) == [(1, 1, FAN_IN), (2, 2, FAN_IN), (3, 2, FAN_IN)], outcome(done)
    assert seen[2]["pid"] != victim, "the redelivered retry must have run on the other worker"
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"results": FAN_IN["results"], "attempt": 2}
    assert await effects_applied(pg, doc.process_id) == list(JoinsFanOut.STEPS)  # each item applied once


# -- 5. an on_failed stage ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_retry_of_an_on_failed_stage_sees_the_same_failure(
    flow: Stageflow, cluster: Cluster, pg: asyncpg.Connection
) -> None:
    doc = await flow.start(RecoversFromFailure, {"plan": ["raise"]})
    [done] = await wait_finished(flow, [doc.process_id], FINISH_WITHIN_S)
    seen = await sightings(pg, doc.process_id, "recover")
    assert runs(seen) == [(1, 1, FAILURE), (2, 2, FAILURE)], outcome(done)
    assert done.status is Status.COMPLETED, outcome(done)
    assert done.result == {"failed_stage": "work", "because": FAILURE["reason"], "attempt": 2}


# -- the in-memory harness, as users test their cases --------------------------------------------------------


async def test_in_memory_harness_a_retry_after_an_exception_sees_the_same_reply() -> None:
    async def effects(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
        return {"step": command.payload["step"], "ok": True}

    async with run_cases([ResumedByReply], services={"effects": effects}) as env:
        doc = await env.run(ResumedByReply, {"step": STEP, "plan": ["raise"], "witness": "memory"},
                            raise_on_failure=False)
    seen = MEMORY_SIGHTINGS.pop((doc.process_id, "use_reply"), [])
    assert runs(seen) == [(1, 1, REPLY), (2, 2, REPLY)], outcome(doc)
    assert doc.status is Status.COMPLETED, outcome(doc)
    assert doc.result == {"reply": REPLY_DATA, "attempt": 2}
