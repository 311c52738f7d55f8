"""Request bodies. Unknown fields are refused (422 naming them), so a typo never passes silently."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from framework.values import holds_nul

StatusFilter = Literal["running", "waiting", "retrying", "completed", "failed", "cancelled"]
ItemStatus = Literal["pending", "dispatched", "done", "failed", "cancelled"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL's text and jsonb cannot hold one: refused here, the same on every store, before any write.
        if holds_nul(data):
            raise ValueError("a NUL character (\\u0000) is not allowed in a request body")
        return data


class StartRequest(_Body):
    input: dict[str, Any] = Field(default_factory=dict, description="the case's input, validated by its model")
    client_key: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="idempotency key: the same key never starts two processes")
    start_at: datetime | None = Field(default=None, description="run the first stage at this time (with timezone)")


class RetryRequest(_Body):
    from_stage: str | None = Field(default=None, min_length=1, description="restart here instead of the failed stage")
    input: dict[str, Any] | None = Field(default=None, description="corrected input, replacing the old one")


class CancelRequest(_Body):
    reason: str = Field(default="cancelled by an operator", min_length=1, max_length=1000)


class ReprocessRequest(_Body):
    case: str | None = None
    status: Literal["failed", "cancelled"] = "failed"
    failed_stage: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    from_stage: str | None = Field(default=None, description="restart every match here instead of its failed stage")


# -- workflows (gateway/routes/workflows.py) --

def _by() -> Any:
    return Field(default=None, max_length=200, description="who makes the change (kept with it; default: unnamed)")


class WorkflowRequest(_Body):
    definition: dict[str, Any] = Field(description="the blueprint (the format of framework/blueprint/schema.json)")
    by: str | None = _by()


class ChangeRequest(_Body):
    by: str | None = _by()


class TemplateRequest(_Body):
    name: str | None = Field(default=None, max_length=63, description="the new workflow's name (default: the "
                             "template's)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="values for the template's parameters")
    by: str | None = _by()
