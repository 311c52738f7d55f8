"""Cases for the probe tests (workers load them with STAGEFLOW_CASES): a stage that is slow but yields, one that
blocks the event loop, and a daily schedule whose row a test can lock to hold a worker's start-up."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from framework import BusinessCase, Schedule, StageContext, stage

SCHEDULE = "probe-daily"


class Seconds(BaseModel):
    seconds: float


class Slow(BusinessCase):
    """A transition that takes ``seconds``: in flight when its worker is told to stop."""

    name = "probe_slow"
    Input = Seconds

    @stage
    async def run(self, ctx: StageContext) -> None:
        await asyncio.sleep(ctx.input.seconds)
        ctx.complete({"slept": ctx.input.seconds})


class Blocking(BusinessCase):
    """Synchronous code in a stage: the worker's event loop answers nothing for ``seconds``."""

    name = "probe_blocking"
    Input = Seconds

    @stage
    async def run(self, ctx: StageContext) -> None:
        time.sleep(ctx.input.seconds)  # noqa: ASYNC251 - blocking the loop is the point
        ctx.complete({"blocked": ctx.input.seconds})


class Daily(BusinessCase):
    """Its schedule is written to the store when a worker starts (``Scheduler.sync``), before it consumes."""

    name = "probe_daily"
    schedules = [Schedule(SCHEDULE, every_s=86_400)]

    @stage
    async def run(self, ctx: StageContext) -> None:
        ctx.complete(None)


CASES = [Slow, Blocking, Daily]
