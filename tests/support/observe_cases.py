"""Cases for the observability tests (workers load them with STAGEFLOW_CASES)."""

from __future__ import annotations

import os

from pydantic import BaseModel, model_validator

from framework import BusinessCase, Retry, StageContext, stage

# Set in the worker's environment only: the starter accepts the input, the worker's model refuses it (a deploy
# whose stricter Input model no longer reads what an older one wrote). The worker crashes on it each time, not
# inside stage code, so the message is a poison one that does not kill its worker.
REJECT_ENV = "STAGEFLOW_TEST_REJECT_INPUT"


class Metered(BusinessCase):
    """Fails its first attempt, then fans out ``items`` commands to the ``effects`` service, two at a time."""

    name, retry = "metered", Retry(attempts=3, backoff_s=0.3, jitter=0.0)

    class Input(BaseModel):
        items: int

    @stage
    async def spread(self, ctx: StageContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("the first attempt fails")
        steps = [{"process_id": ctx.process_id, "step": i} for i in range(ctx.input.items)]
        ctx.fan_out(steps, api="effects", max_in_flight=2)

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete({"succeeded": ctx.fan_in.succeeded if ctx.fan_in else None})


class Unreadable(BusinessCase):
    """Its input validates where it is started and not in the worker (see ``REJECT_ENV``)."""

    name = "unreadable"

    class Input(BaseModel):
        n: int = 0

        @model_validator(mode="after")
        def _refused_in_the_worker(self) -> Unreadable.Input:
            if os.environ.get(REJECT_ENV):
                raise ValueError("this worker's model refuses the input")
            return self

    @stage
    async def only(self, ctx: StageContext) -> None:
        ctx.complete(None)


CASES = [Metered, Unreadable]
