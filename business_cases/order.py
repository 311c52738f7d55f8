"""The e-commerce order from the design notes.

get the schedule from the scheduling service -> create the job at a third-party service -> keep the
``job_id`` from its reply -> finish. Each step is a service command whose reply resumes the next stage.
"""

from __future__ import annotations

from datetime import date
from typing import Any, cast

from pydantic import BaseModel, Field

from framework import BusinessCase, NonRetryableError, StageContext, stage


class EcommerceOrder(BusinessCase):
    name = "ecommerce_order"
    version = 1

    class Input(BaseModel):
        order_id: str = Field(min_length=1, max_length=100)
        desired_date: date
        customer_email: str | None = None

    @classmethod
    def from_webhook(cls, body: dict[str, Any]) -> tuple[dict[str, Any], str | None, None]:
        """The shop's order webhook ``{"order_id": ..., "desired_date": ..., "customer_email"?: ...}``.

        The order id is the client key, so a webhook delivered twice starts one process. The process
        starts at once: scheduling needs the lead time before the desired date."""
        input_data: dict[str, Any] = {k: body[k] for k in ("order_id", "desired_date", "customer_email") if k in body}
        order_id = body.get("order_id")
        return input_data, (str(order_id) if order_id not in (None, "") else None), None

    @stage
    async def get_schedule(self, ctx: StageContext) -> None:
        order = _order(ctx)
        ctx.call("scheduling", {"order_id": order.order_id, "desired_date": str(order.desired_date)})

    @stage
    async def create_job(self, ctx: StageContext) -> None:
        schedule = _reply(ctx)
        ctx.store["schedule"] = schedule
        ctx.call("third_party_jobs", {"order_id": _order(ctx).order_id, "slot": schedule["slot"]})

    @stage
    async def keep_job_id(self, ctx: StageContext) -> None:
        ctx.store["job_id"] = _reply(ctx)["job_id"]
        ctx.next()

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete({"job_id": ctx.store["job_id"], "slot": ctx.store["schedule"]["slot"]})


def _order(ctx: StageContext) -> EcommerceOrder.Input:
    """The process input, validated as ``EcommerceOrder.Input`` when the process started (the context types
    it as any model)."""
    return cast(EcommerceOrder.Input, ctx.input)


def _reply(ctx: StageContext) -> Any:
    """The data of the service reply that resumed this stage (each stage after the first is resumed by one)."""
    if ctx.reply is None:
        raise NonRetryableError(f"stage {ctx.stage!r} runs on a service reply and has none")
    return ctx.reply.data
