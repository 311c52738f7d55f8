"""Cases that fan out, for the fan-out tests (workers load them with STAGEFLOW_CASES)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from pydantic import BaseModel, field_validator

from framework import BusinessCase, FanItem, StageContext, stage


class Spread(BusinessCase):
    """Fans out ``items`` commands to the ``effects`` service, then ``children`` child processes, then joins."""

    name = "spread"
    version = 1

    class Input(BaseModel):
        items: int
        children: int = 0
        max_in_flight: int = 50
        tolerate: int = 0

    @stage
    async def commands(self, ctx: StageContext) -> None:
        payloads = [{"process_id": ctx.process_id, "step": i} for i in range(ctx.input.items)]
        ctx.fan_out(payloads, api="effects", max_in_flight=ctx.input.max_in_flight, tolerate=ctx.input.tolerate)

    @stage
    async def children(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        # Keep a digest, not the 1,000 replies: the document stays small.
        ctx.store["steps_in_order"] = [r["step"] for r in ctx.fan_in.results] == list(range(ctx.input.items))
        ctx.store["commands"] = {"succeeded": ctx.fan_in.succeeded, "failed": ctx.fan_in.failed}
        ctx.fan_out([{"n": n} for n in range(ctx.input.children)], case="spread_child", max_in_flight=20)

    @stage
    async def joined(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({**ctx.store, "children": ctx.fan_in.results, "child_errors": len(ctx.fan_in.errors)})


class SpreadChild(BusinessCase):
    """A child process: one service round trip, then its result for the parent."""

    name = "spread_child"
    version = 1

    class Input(BaseModel):
        n: int

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("effects", {"process_id": ctx.process_id, "step": 1})

    @stage
    async def answer(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n, "squared": ctx.input.n ** 2})


class Nap(BusinessCase):
    """A child that takes ``seconds`` and reports when it ran."""

    name = "nap"
    version = 1

    class Input(BaseModel):
        seconds: float

    @stage
    async def nap(self, ctx: StageContext) -> None:
        began = time.time()
        await asyncio.sleep(ctx.input.seconds)
        ctx.complete({"began": began, "ended": time.time()})


class Parallel(BusinessCase):
    """Two independent steps (a child process each, of different lengths) run at the same time."""

    name = "parallel"
    version = 1

    @stage
    async def both(self, ctx: StageContext) -> None:
        ctx.fan_out([FanItem(case="nap", input={"seconds": 1.0}), FanItem(case="nap", input={"seconds": 1.5})])

    @stage
    async def after(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({"naps": ctx.fan_in.results})




class BulkyChild(BusinessCase):
    """A child whose result is ``size`` bytes of text."""

    name = "bulky_child"
    version = 1

    class Input(BaseModel):
        size: int

    @stage
    async def make(self, ctx: StageContext) -> None:
        ctx.complete({"blob": "x" * ctx.input.size})


class Bulky(BusinessCase):
    """Fans out one ``bulky_child`` per size, tolerating ``tolerate`` failed children; keeps each result's length."""

    name = "bulky"
    version = 1

    class Input(BaseModel):
        sizes: list[int]
        tolerate: int = 0

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([{"size": size} for size in ctx.input.sizes], case="bulky_child", tolerate=ctx.input.tolerate)

    @stage
    async def joined(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({"lengths": [None if r is None else len(r["blob"]) for r in ctx.fan_in.results],
                      "errors": {str(i): e for i, e in ctx.fan_in.errors.items()}})



class TouchyChild(BusinessCase):
    """A child whose input kills the worker that starts it (``die``): its start message is a poison message."""

    name = "touchy_child"
    version = 1

    class Input(BaseModel):
        die: bool = False

        @field_validator("die")
        @classmethod
        def _maybe_die(cls, die: bool) -> bool:
            if die:
                os.kill(os.getpid(), signal.SIGKILL)
            return die

    @stage
    async def only(self, ctx: StageContext) -> None:
        ctx.complete("alive")


class Touchy(BusinessCase):
    """Fans out two children, one of them poison, tolerating one failed item."""

    name = "touchy"
    version = 1

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([{"die": True}, {"die": False}], case="touchy_child", tolerate=1)

    @stage
    async def joined(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({"results": ctx.fan_in.results, "errors": {str(i): e for i, e in ctx.fan_in.errors.items()}})


CASES = [Spread, SpreadChild, Nap, Parallel, BulkyChild, Bulky, TouchyChild, Touchy]
