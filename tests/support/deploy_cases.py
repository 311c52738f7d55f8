"""Cases of two releases for the deploy tests: ``order`` v1 waits for an event at ``reserve``, then ``charge``
resumes it; v2 replaced ``charge`` by ``pay``. ``OrderV1Trimmed`` is v1 as a careless release would ship it,
without ``charge``, which waiting v1 processes still need."""

from __future__ import annotations

from pydantic import BaseModel

from framework import BusinessCase, StageContext, stage


class _Input(BaseModel):
    n: int


class OrderV1(BusinessCase):
    name = "order"
    version = 1
    Input = _Input

    @stage
    async def reserve(self, ctx: StageContext) -> None:
        ctx.wait_for("go")

    @stage
    async def charge(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n})


class OrderV1Trimmed(BusinessCase):
    name = "order"
    version = 1
    Input = _Input

    @stage
    async def reserve(self, ctx: StageContext) -> None:
        ctx.wait_for("go")

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n})


class OrderV2(BusinessCase):
    name = "order"
    version = 2
    Input = _Input

    @stage
    async def reserve(self, ctx: StageContext) -> None:
        ctx.wait_for("go")

    @stage
    async def pay(self, ctx: StageContext) -> None:
        ctx.next()

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"n": ctx.input.n})
