"""Cases whose stages are resumed by something (a service reply, a fan-in, a failure) and then retried, timed
out or killed, for the stage-resumption tests (DESIGN.md, contract point 7: every attempt of a stage sees what
resumed it).

Every run of a watched stage first records what it saw (``ctx.attempt``, its worker's pid, and the reply, fan-in
or failure it was given) as a row of ``sightings``, committed before it does anything else; then it does what
its input's ``plan`` says for that run: ``raise`` (a retryable exception), ``hang`` (sleep until the test
SIGKILLs the worker: the row is the signal that the run is under way), ``slow`` (outlast the stage's
``timeout_s``) or ``ok`` (go on: use what resumed it and complete). Runs past the end of the plan are ``ok``.
A failed attempt's ``ctx.store`` writes are not kept, so the witness is a table (in the worker subprocesses:
the test's schema, reached through ``STAGEFLOW_SERVICES_DB_URL``) or, under ``framework.testing.run_cases``,
the in-memory ``MEMORY_SIGHTINGS`` (``witness="memory"``).

Services: the ``effects`` service of ``tests.support.services`` answers ``{"step": <step>, "ok": True}``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import asyncpg
import orjson
from pydantic import BaseModel

from framework import BusinessCase, NonRetryableError, Retry, StageContext, stage

FAST_RETRY = Retry(attempts=3, backoff_s=0.1, multiplier=1.0, jitter=0.0)
STAGE_TIMEOUT_S = 0.5  # the timed stage's limit; a ``slow`` run sleeps SLOW_S
SLOW_S = 5.0
HANG_S = 60.0  # a ``hang`` run sleeps this long: the test kills its worker well before

SIGHTINGS_SQL = """
CREATE TABLE IF NOT EXISTS sightings (
    process_id text NOT NULL,
    stage text NOT NULL,
    run int NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    seen jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (process_id, stage, run)
)
"""

# witness="memory": (process_id, stage) -> [{"run", "attempt", "pid", "seen"}, ...]
MEMORY_SIGHTINGS: dict[tuple[str, str], list[dict[str, Any]]] = {}

Step = Literal["raise", "hang", "slow", "ok"]


class Plan(BaseModel):
    step: int = 7301  # the payload of the command whose reply resumes the watched stage
    plan: list[Step] = []  # what runs 1, 2, ... of the watched stage do (then "ok")
    witness: Literal["table", "memory"] = "table"


async def record(ctx: StageContext, seen: Any, witness: str) -> int:
    """Record one run of this stage and what it saw; returns the run's number (1, 2, ...)."""
    if witness == "memory":
        runs = MEMORY_SIGHTINGS.setdefault((ctx.process_id, ctx.stage), [])
        runs.append({"run": len(runs) + 1, "attempt": ctx.attempt, "pid": os.getpid(), "seen": seen})
        return len(runs)
    conn = await asyncpg.connect(os.environ["STAGEFLOW_SERVICES_DB_URL"])  # search_path: the test's schema
    try:
        return await conn.fetchval(
            "INSERT INTO sightings (process_id, stage, run, attempt, pid, seen)"
            " SELECT $1, $2, coalesce(max(run), 0) + 1, $3, $4, $5::jsonb FROM sightings"
            " WHERE process_id = $1 AND stage = $2 RETURNING run",
            ctx.process_id, ctx.stage, ctx.attempt, os.getpid(), orjson.dumps(seen).decode(),
        )
    finally:
        await conn.close()


async def follow_plan(ctx: StageContext, seen: Any, input: Plan) -> None:
    """Record this run, then raise, hang or outlast the timeout if the plan says so for this run."""
    run = await record(ctx, seen, input.witness)
    step = input.plan[run - 1] if run <= len(input.plan) else "ok"
    if step == "raise":
        raise ConnectionError(f"run {run} (attempt {ctx.attempt}) of {ctx.stage} failed on purpose")
    if step == "hang":
        await asyncio.sleep(HANG_S)  # the test SIGKILLs this worker now
        raise AssertionError(f"run {run} of {ctx.stage} was meant to be killed while it slept")
    if step == "slow":
        await asyncio.sleep(SLOW_S)  # longer than the stage's timeout_s


def seen_reply(ctx: StageContext) -> dict[str, Any] | None:
    reply = ctx.reply
    return None if reply is None else {"api": reply.api, "ok": reply.ok, "data": reply.data, "error": reply.error}


def seen_fan_in(ctx: StageContext) -> dict[str, Any] | None:
    fan = ctx.fan_in
    if fan is None:
        return None
    return {"total": fan.total, "succeeded": fan.succeeded, "failed": fan.failed, "results": fan.results,
            "errors": {str(i): e for i, e in fan.errors.items()}}


def seen_failure(ctx: StageContext) -> dict[str, Any] | None:
    failure = ctx.failure
    return None if failure is None else {"stage": failure.get("stage"), "reason": failure.get("reason")}


class ResumedByReply(BusinessCase):
    """``ask`` calls ``effects``; its reply resumes ``use_reply``, which follows the plan, then completes with
    the reply's data."""

    name = "resumed_by_reply"
    retry = FAST_RETRY
    Input = Plan

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("effects", {"process_id": ctx.process_id, "step": ctx.input.step})

    @stage
    async def use_reply(self, ctx: StageContext) -> None:
        await follow_plan(ctx, seen_reply(ctx), ctx.input)
        ctx.complete({"reply": ctx.reply.data, "attempt": ctx.attempt})


class ResumedByReplyTimed(BusinessCase):
    """Like ``resumed_by_reply``, but ``use_reply`` has a stage timeout (a ``slow`` run outlasts it)."""

    name = "resumed_by_reply_timed"
    retry = FAST_RETRY
    Input = Plan

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("effects", {"process_id": ctx.process_id, "step": ctx.input.step})

    @stage(timeout_s=STAGE_TIMEOUT_S)
    async def use_reply(self, ctx: StageContext) -> None:
        await follow_plan(ctx, seen_reply(ctx), ctx.input)
        ctx.complete({"reply": ctx.reply.data, "attempt": ctx.attempt})


class JoinsFanOut(BusinessCase):
    """``spread`` fans out three ``effects`` commands (steps 10, 20, 30); ``join`` follows the plan, then
    completes with the results."""

    name = "joins_fan_out"
    retry = FAST_RETRY
    Input = Plan

    STEPS = (10, 20, 30)

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([{"process_id": ctx.process_id, "step": s} for s in self.STEPS], api="effects")

    @stage
    async def join(self, ctx: StageContext) -> None:
        await follow_plan(ctx, seen_fan_in(ctx), ctx.input)
        ctx.complete({"results": ctx.fan_in.results, "attempt": ctx.attempt})


class RecoversFromFailure(BusinessCase):
    """``work`` fails for good; its ``on_failed`` stage ``recover`` follows the plan, then completes with the
    failure it was sent there for."""

    name = "recovers_from_failure"
    retry = FAST_RETRY
    Input = Plan

    REASON = "the feed is empty"

    @stage(on_failed="recover")
    async def work(self, ctx: StageContext) -> None:
        raise NonRetryableError(self.REASON)

    @stage
    async def recover(self, ctx: StageContext) -> None:
        await follow_plan(ctx, seen_failure(ctx), ctx.input)
        ctx.complete({"failed_stage": ctx.failure["stage"], "because": ctx.failure["reason"],
                      "attempt": ctx.attempt})


CASES = [ResumedByReply, ResumedByReplyTimed, JoinsFanOut, RecoversFromFailure]
