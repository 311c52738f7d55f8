"""Cases used by the integration and fault tests (workers load them with STAGEFLOW_CASES)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from framework import BusinessCase, Retry, StageContext, stage

STEPS = 5


class FiveCalls(BusinessCase):
    """Five stages, each with a service round trip, then a final stage: the fault tests' workload."""

    name = "five_calls"
    version = 1

    class Input(BaseModel):
        n: int

    async def _step(self, ctx: StageContext, step: int) -> None:
        if ctx.reply is not None:
            ctx.store[f"reply_{step - 1}"] = ctx.reply.data
        ctx.store[f"step_{step}"] = ctx.transition
        ctx.call("effects", {"n": ctx.input.n, "step": step, "process_id": ctx.process_id})

    @stage
    async def step_1(self, ctx: StageContext) -> None:
        await self._step(ctx, 1)

    @stage
    async def step_2(self, ctx: StageContext) -> None:
        await self._step(ctx, 2)

    @stage
    async def step_3(self, ctx: StageContext) -> None:
        await self._step(ctx, 3)

    @stage
    async def step_4(self, ctx: StageContext) -> None:
        await self._step(ctx, 4)

    @stage
    async def step_5(self, ctx: StageContext) -> None:
        await self._step(ctx, 5)

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.store["reply_5"] = ctx.reply.data
        ctx.complete({"n": ctx.input.n, "steps": STEPS})


class Jumper(BusinessCase):
    """Carries data across stages and jumps over one with ``next(stage=...)``."""

    name = "jumper"
    version = 1

    class Input(BaseModel):
        word: str

    @stage
    async def first(self, ctx: StageContext) -> None:
        ctx.store["seen"] = ["first"]
        ctx.store["word"] = ctx.input.word.upper()
        ctx.next(stage="third")

    @stage
    async def second(self, ctx: StageContext) -> None:
        ctx.store["seen"].append("second")  # skipped by the jump
        ctx.next()

    @stage
    async def third(self, ctx: StageContext) -> None:
        ctx.store["seen"].append("third")
        ctx.call("effects", {"n": 0, "step": 1, "process_id": ctx.process_id}, resume="fourth")

    @stage
    async def fourth(self, ctx: StageContext) -> None:
        ctx.store["seen"].append("fourth")
        ctx.store["reply"] = ctx.reply.data
        ctx.complete({"word": ctx.store["word"], "seen": ctx.store["seen"]})


class Crasher(BusinessCase):
    """A stage that raises: the process fails with the reason recorded."""

    name = "crasher"
    version = 1

    @stage
    async def boom(self, ctx: StageContext) -> None:
        raise RuntimeError("the stage blew up")


class Slow(BusinessCase):
    """A stage that takes a while and leaves a mark each time it runs: for the graceful-shutdown test."""

    name = "slow"
    version = 1

    class Input(BaseModel):
        marker: str
        seconds: float

    @stage
    async def slow(self, ctx: StageContext) -> None:
        await asyncio.to_thread(_append_line, ctx.input.marker, "ran")
        await asyncio.sleep(ctx.input.seconds)
        ctx.next()

    @stage
    async def after(self, ctx: StageContext) -> None:
        ctx.complete("done")


class TracedTimers(BusinessCase):
    """A service call, a durable wait, a stage that fails its first attempt and is retried after a backoff, and a
    second call: the tracing test follows it through the due-work loop's timers."""

    name = "traced_timers"
    version = 1

    class Input(BaseModel):
        wait_s: float

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("effects", {"n": 0, "step": 1, "process_id": ctx.process_id})

    @stage
    async def pause(self, ctx: StageContext) -> None:
        ctx.wait(ctx.input.wait_s)

    @stage(retry=Retry(attempts=2, backoff_s=0.2, jitter=0))
    async def flaky(self, ctx: StageContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        ctx.call("effects", {"n": 0, "step": 2, "process_id": ctx.process_id})

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"attempts_of_flaky": 2})



CASES = [FiveCalls, Jumper, Crasher, Slow, TracedTimers]


def _append_line(path: str, line: str) -> None:
    with open(path, "a") as marker:
        marker.write(line + "\n")

