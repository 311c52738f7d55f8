"""Cases with schedules, for the schedule tests (workers load them with STAGEFLOW_CASES)."""

from __future__ import annotations

from pydantic import BaseModel

from framework import BusinessCase, Schedule, StageContext, stage

DAY_S = 86_400


class Ticked(BusinessCase):
    """Started every second by the schedule; completes at once."""

    name = "ticked"

    class Input(BaseModel):
        source: str

    schedules = [Schedule("every-second", every_s=1, input={"source": "tick"}, missed="catch_up", max_catch_up=10)]

    @stage
    async def run(self, ctx: StageContext) -> None:
        ctx.complete({"source": ctx.input.source})


class DailySkip(BusinessCase):
    name = "daily_skip"
    schedules = [Schedule("daily-skip", every_s=DAY_S)]

    @stage
    async def run(self, ctx: StageContext) -> None:
        ctx.complete(None)


class DailyCatchUp(BusinessCase):
    name = "daily_catch_up"
    schedules = [Schedule("daily-catch-up", every_s=DAY_S, missed="catch_up", max_catch_up=5)]

    @stage
    async def run(self, ctx: StageContext) -> None:
        ctx.complete(None)


CASES = [Ticked, DailySkip, DailyCatchUp]
