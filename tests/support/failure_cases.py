"""Cases that fail, wait and time out, for the failure-and-time tests."""

from __future__ import annotations

import asyncio
import os
import signal

from pydantic import BaseModel

from framework import BusinessCase, NonRetryableError, StageContext, stage
from framework.policies import Retry

QUICK_RETRY = Retry(attempts=3, backoff_s=10.0, multiplier=2.0, jitter=0.0)


class Flaky(BusinessCase):
    """Fails until its ``succeed_on`` attempt; retried with a 10 s, 20 s backoff."""

    name = "flaky"
    retry = QUICK_RETRY

    class Input(BaseModel):
        succeed_on: int
        fatal: bool = False

    @stage
    async def flaky(self, ctx: StageContext) -> None:
        ctx.store.setdefault("attempts_seen", [])
        if ctx.input.fatal:
            raise NonRetryableError("the input can never work")
        if ctx.attempt < ctx.input.succeed_on:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        ctx.store["attempts_seen"] = ctx.attempt
        ctx.next()

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete({"succeeded_on": ctx.store["attempts_seen"]})


class Waiter(BusinessCase):
    """Waits 60 s, then until an absolute time, then finishes."""

    name = "waiter"

    class Input(BaseModel):
        until: float

    @stage
    async def begin(self, ctx: StageContext) -> None:
        ctx.store["began"] = ctx.now
        ctx.wait(60)

    @stage
    async def middle(self, ctx: StageContext) -> None:
        ctx.store["middle"] = ctx.now
        ctx.wait(until=ctx.input.until, then="finish")

    @stage
    async def skipped(self, ctx: StageContext) -> None:
        ctx.fail("never reached")

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete({"began": ctx.store["began"], "middle": ctx.store["middle"], "finished": ctx.now})


class Timeouts(BusinessCase):
    """A stage slower than its timeout, then a call that nobody answers, with an on_failed path."""

    name = "timeouts"

    class Input(BaseModel):
        stage_seconds: float = 0.0

    @stage(timeout_s=0.3, retry=Retry(attempts=2, backoff_s=5, jitter=0.0))
    async def slow(self, ctx: StageContext) -> None:
        await asyncio.sleep(ctx.input.stage_seconds)
        ctx.next()

    @stage(reply_timeout_s=30, retry=Retry(attempts=2, backoff_s=5, jitter=0.0), on_failed="fallback")
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("silent", {"question": 42})

    @stage
    async def answered(self, ctx: StageContext) -> None:
        ctx.complete({"answer": ctx.reply.data})

    @stage
    async def fallback(self, ctx: StageContext) -> None:
        ctx.complete({"fallback": True, "because": ctx.failure.reason, "attempts": ctx.failure.attempts})


class Optional_(BusinessCase):
    """An optional stage fails; the process goes on and records the failure."""

    name = "optional_step"

    @stage(optional=True)
    async def enrich(self, ctx: StageContext) -> None:
        raise RuntimeError("enrichment service is down")

    @stage
    async def store_it(self, ctx: StageContext) -> None:
        ctx.complete("stored")


class Fixable(BusinessCase):
    """Fails on bad input; an operator retries it with corrected input."""

    name = "fixable"

    class Input(BaseModel):
        quantity: int

    @stage
    async def prepare(self, ctx: StageContext) -> None:
        ctx.store["prepared"] = True
        ctx.next()

    @stage
    async def check(self, ctx: StageContext) -> None:
        if ctx.input.quantity <= 0:
            ctx.fail(f"quantity {ctx.input.quantity} is not positive")
            return
        ctx.complete({"quantity": ctx.input.quantity, "prepared": ctx.store["prepared"]})


class RetryableService(BusinessCase):
    """Calls a service that answers "try again" twice before it succeeds."""

    name = "retryable_service"
    retry = Retry(attempts=4, backoff_s=3, jitter=0.0)

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("moody", {"q": 1})

    @stage
    async def done(self, ctx: StageContext) -> None:
        ctx.complete(ctx.reply.data)


class Killer(BusinessCase):
    """A poison stage: it kills the worker running it, every time."""

    name = "killer"

    @stage
    async def die(self, ctx: StageContext) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


CASES = [Flaky, Waiter, Timeouts, Optional_, Fixable, RetryableService, Killer]
