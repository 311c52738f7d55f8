"""Cases that wait for events, for the event tests (workers load them with STAGEFLOW_CASES)."""

from __future__ import annotations

from pydantic import BaseModel

from framework import BusinessCase, Retry, StageContext, stage


class AwaitPayment(BusinessCase):
    """Waits ``delay_s`` first (an event sent meanwhile comes before the wait), then for ``paid``."""

    name = "await_payment"
    version = 1
    retry = Retry(attempts=1)

    class Input(BaseModel):
        delay_s: float = 0.0
        timeout_s: float = 120.0

    @stage
    async def begin(self, ctx: StageContext) -> None:
        if ctx.input.delay_s > 0:
            ctx.wait(ctx.input.delay_s)
        else:
            ctx.next()

    @stage(on_failed="expired")
    async def await_paid(self, ctx: StageContext) -> None:
        ctx.wait_for("paid", timeout_s=ctx.input.timeout_s, resume="paid")

    @stage(retry=Retry(attempts=3, backoff_s=0.05))
    async def paid(self, ctx: StageContext) -> None:
        assert ctx.event is not None
        if ctx.attempt == 1 and ctx.event.data.get("fail_once"):  # the retry must see the same event
            raise RuntimeError("first attempt fails")
        ctx.complete({"event": ctx.event.data, "event_id": ctx.event.id, "attempt": ctx.attempt})

    @stage
    async def expired(self, ctx: StageContext) -> None:
        assert ctx.failure is not None
        ctx.complete({"expired": ctx.failure.reason})


class Confirmation(BusinessCase):
    """Hands out a callback token (kept in the store for the test to play the third party), waits for it."""

    name = "confirmation"
    version = 1
    retry = Retry(attempts=1)

    class Input(BaseModel):
        timeout_s: float = 600.0

    @stage(on_failed="rejected")
    async def ask(self, ctx: StageContext) -> None:
        ctx.store["token"] = ctx.wait_for("confirmed", timeout_s=ctx.input.timeout_s, token=True)

    @stage
    async def confirmed(self, ctx: StageContext) -> None:
        assert ctx.event is not None
        ctx.complete({"confirmed": ctx.event.data})

    @stage
    async def rejected(self, ctx: StageContext) -> None:
        assert ctx.failure is not None
        ctx.complete({"rejected": ctx.failure.reason})


class EventChild(BusinessCase):
    """A child that waits for an event that never comes."""

    name = "event_child"
    version = 1

    class Input(BaseModel):
        n: int

    @stage
    async def hold(self, ctx: StageContext) -> None:
        ctx.wait_for("never", resume="hold_done")

    @stage
    async def hold_done(self, ctx: StageContext) -> None:
        ctx.complete()


class Holders(BusinessCase):
    """Fans out ``children`` waiting children, ``window`` at a time: cancelling it must cancel them all."""

    name = "holders"
    version = 1

    class Input(BaseModel):
        children: int
        window: int

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([{"n": i} for i in range(ctx.input.children)], case="event_child", max_in_flight=ctx.input.window)

    @stage
    async def joined(self, ctx: StageContext) -> None:
        ctx.complete()


class Tagged(BusinessCase):
    """Sets its search attributes from its input (``bad`` sets one of the wrong type), then waits for ``done``."""

    name = "tagged"
    version = 1
    search_attributes = {"customer_id": str, "order_total": float, "vip": bool, "items": int}

    class Input(BaseModel):
        customer_id: str
        order_total: float
        vip: bool = False
        items: int = 1
        bad: bool = False

    @stage
    async def tag(self, ctx: StageContext) -> None:
        i = ctx.input
        ctx.search.update(customer_id=i.customer_id, order_total=i.order_total, vip=i.vip, items=i.items)
        if i.bad:
            ctx.search["items"] = "many"
        ctx.wait_for("done", resume="finish")

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete()


CASES = [AwaitPayment, Confirmation, EventChild, Holders, Tagged]
