"""The e-commerce order from the design notes.

get the schedule from the scheduling service -> create the job at a third-party service -> keep the
``job_id`` from its reply -> finish. Each step is a service command whose reply resumes the next stage.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from framework import BusinessCase, StageContext, stage


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
        input_data = {k: body[k] for k in ("order_id", "desired_date", "customer_email") if k in body}
        order_id = body.get("order_id")
        return input_data, (str(order_id) if order_id not in (None, "") else None), None

    @stage
    async def get_schedule(self, ctx: StageContext) -> None:
        ctx.call("scheduling", {"order_id": ctx.input.order_id, "desired_date": str(ctx.input.desired_date)})

    @stage
    async def create_job(self, ctx: StageContext) -> None:
        ctx.store["schedule"] = ctx.reply.data
        ctx.call("third_party_jobs", {"order_id": ctx.input.order_id, "slot": ctx.reply.data["slot"]})

    @stage
    async def keep_job_id(self, ctx: StageContext) -> None:
        ctx.store["job_id"] = ctx.reply.data["job_id"]
        ctx.next()

    @stage
    async def finish(self, ctx: StageContext) -> None:
        ctx.complete({"job_id": ctx.store["job_id"], "slot": ctx.store["schedule"]["slot"]})
