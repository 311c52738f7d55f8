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


class CronTicked(BusinessCase):
    """Started every two seconds by a cron expression with a seconds field, in a time zone with DST."""

    name = "cron_ticked"
    schedules = [Schedule("every-2-seconds", cron="*/2 * * * * *", timezone="Europe/Berlin", missed="catch_up")]

    @stage
    async def run(self, ctx: StageContext) -> None:
        ctx.complete(None)


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


CASES = [Ticked, CronTicked, DailySkip, DailyCatchUp]
