"""The benchmark's cases: a chain of five no-op stages, and a loop for long histories (workers load them
via ``STAGEFLOW_CASES=bench.cases``)."""

from __future__ import annotations

from pydantic import BaseModel

from framework import BusinessCase, StageContext, stage


class BenchChain(BusinessCase):
    """``one -> two -> three -> four -> five``: five transitions per process, no work of their own, so the
    figure is the framework's cost per durable transition (the same chain every peer runs)."""

    name = "bench_chain"
    version = 1

    class Input(BaseModel):
        n: int

    @stage
    async def one(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def two(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def three(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def four(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def five(self, ctx: StageContext) -> None:
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


CASES = [BenchChain, LoopFlow]
