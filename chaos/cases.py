"""The chaos suite's cases (workers load them with ``STAGEFLOW_CASES=chaos.cases``) and what the ledger
must show for each. Every service call goes to the ``effects`` test service (``tests/support/services.py``),
which writes one row per applied effect: the witness of doubled effects."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from framework import BusinessCase, Retry, StageContext, stage
from tests.support.failure_cases import Killer
from tests.support.ledger import Expected

EFFECTS_API = "effects"
FLAKY_RETRY = Retry(attempts=3, backoff_s=0.2, jitter=0.0)


class ChaosFlow(BusinessCase):
    """Five stages with a service round trip each, and ``check``, which fails on its first attempt.

    ``step_1 -(effects)-> step_2 -(effects)-> step_3 -(effects)-> check -> step_4 -(effects)-> step_5
    -(effects)-> done``. ``check`` raises on attempt 1 (a retry after 0.2 s, fired by the due-work loop)
    and goes on with ``next()`` on attempt 2. (A retried stage runs without the reply that resumed its
    first attempt, so ``check`` does not read it.)
    """

    name = "chaos_flow"
    version = 1

    class Input(BaseModel):
        n: int

    def _call(self, ctx: StageContext, step: int) -> None:
        if ctx.reply is not None:
            ctx.store[f"reply_{step - 1}"] = ctx.reply.data
        ctx.call(EFFECTS_API, {"n": ctx.input.n, "step": step, "process_id": ctx.process_id})

    @stage
    async def step_1(self, ctx: StageContext) -> None:
        self._call(ctx, 1)

    @stage
    async def step_2(self, ctx: StageContext) -> None:
        self._call(ctx, 2)

    @stage
    async def step_3(self, ctx: StageContext) -> None:
        self._call(ctx, 3)

    @stage(retry=FLAKY_RETRY)
    async def check(self, ctx: StageContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("the first attempt of check always fails")
        ctx.store["checked_on_attempt"] = ctx.attempt
        ctx.next()

    @stage
    async def step_4(self, ctx: StageContext) -> None:
        self._call(ctx, 4)

    @stage
    async def step_5(self, ctx: StageContext) -> None:
        self._call(ctx, 5)

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.store["reply_5"] = ctx.reply.data
        ctx.complete({"n": ctx.input.n, "checked_on_attempt": ctx.store["checked_on_attempt"]})


# The stage that ran each service call (by the stage its reply resumes), for rebuilding commands.
CHAOS_FLOW_CALLS = {"step_2": 1, "step_3": 2, "check": 3, "step_5": 4, "done": 5}

# Ledger rows of one chaos_flow process: (old version, stage the old document was at, status after).
# v3 step_3 calls and waits at ``check``; v4 check fails (retry: waiting); v5 the retry runs check.
CHAOS_FLOW = Expected(
    commits=(
        (1, "step_1", "waiting"),
        (2, "step_2", "waiting"),
        (3, "step_3", "waiting"),
        (4, "check", "waiting"),
        (5, "check", "running"),
        (6, "step_4", "waiting"),
        (7, "step_5", "waiting"),
        (8, "done", "completed"),
    ),
    steps=(1, 2, 3, 4, 5),
    history=tuple(range(1, 10)),
)


class ChaosSlow(BusinessCase):
    """A stage that takes a while (so a frozen worker is caught in the middle of it), then one effect."""

    name = "chaos_slow"
    version = 1

    class Input(BaseModel):
        n: int
        seconds: float

    @stage
    async def slow(self, ctx: StageContext) -> None:
        await asyncio.sleep(ctx.input.seconds)
        ctx.call(EFFECTS_API, {"n": ctx.input.n, "step": 1, "process_id": ctx.process_id})

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n, "reply": ctx.reply.data})


CHAOS_SLOW = Expected(commits=((1, "slow", "waiting"), (2, "done", "completed")), steps=(1,), history=(1, 2, 3))

# ``killer`` (tests/support/failure_cases.py): its only stage SIGKILLs the worker running it.
CASES = [ChaosFlow, ChaosSlow, Killer]
