"""The benchmark's case: a chain of five no-op stages (workers load it via ``STAGEFLOW_CASES=bench.cases``)."""

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


CASES = [BenchChain]
