"""The benchmark's cases: five stages with a service round trip, and a loop for long histories (workers
load them via STAGEFLOW_CASES)."""

from __future__ import annotations

from pydantic import BaseModel

from framework import BusinessCase, StageContext, stage

STAGES = 5


class BenchFlow(BusinessCase):
    """``receive -> enrich -(bench_echo)-> decide -> record -> finish``: five transitions per process.

    ``enrich`` calls the ``bench_echo`` service; its reply resumes ``decide``. The other stages go on with
    ``next()`` and ``finish`` completes. Each stage writes a little to the store, as real stages do.
    """

    name = "bench_flow"
    version = 1

    class Input(BaseModel):
        n: int

    @stage
    async def receive(self, ctx: StageContext) -> None:
        ctx.store["received"] = ctx.input.n
        ctx.next()

    @stage
    async def enrich(self, ctx: StageContext) -> None:
        ctx.call("bench_echo", {"n": ctx.input.n})

    @stage
    async def decide(self, ctx: StageContext) -> None:
        ctx.store["echo"] = ctx.reply.data if ctx.reply is not None else None
        ctx.next()

    @stage
    async def record(self, ctx: StageContext) -> None:
        ctx.store["recorded"] = True
        ctx.next()

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n})


class LoopFlow(BusinessCase):
    """One stage that runs ``rounds`` times (a jump to itself), for a history of any length
    (``make bench-scale``: is the 1,000th transition of a process as cheap as its 5th?)."""

    name = "bench_loop"
    version = 1

    class Input(BaseModel):
        rounds: int

    @stage
    async def turn(self, ctx: StageContext) -> None:
        turns = ctx.store.get("turns", 0) + 1
        ctx.store["turns"] = turns
        if turns >= ctx.input.rounds:
            ctx.complete({"turns": turns})
        else:
            ctx.next(stage="turn")


CASES = [BenchFlow, LoopFlow]
