"""Events for waiting processes (by id, or by case and client key), lookup by client key, and callbacks.

``POST /callbacks/{token}`` needs no API key: the signed, expiring, single-use token is the capability. A
forged token is refused with 401, an expired one with 410, a used one with 409; none of them changes anything.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from framework.app import Stageflow
from framework.errors import CallbackTokenError
from framework.signals import MAX_EVENT_ID_CHARS, Delivery
from gateway.auth import ApiKeys, Role
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of
from gateway.routes.processes import process_response

Flow = Annotated[Stageflow, Depends(flow_of)]
ACTS = {**KEYED, **problem_responses(404, 409, 413)}


class EventRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: Any = Field(default=None, description="the event's data (JSON), seen by the resumed stage as ctx.event")
    event_id: str | None = Field(default=None, min_length=1, max_length=MAX_EVENT_ID_CHARS,
                                 description="the same id twice changes nothing the second time")


class CallbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool = Field(default=True, description="false: the wait fails (the stage's failure path applies)")
    data: Any = None


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approved: bool
    comment: str | None = Field(default=None, max_length=2000)
    by: str | None = Field(default=None, max_length=200, description="who decided (default: unnamed)")


def _delivered(delivery: Delivery, response: Response) -> dict[str, Any]:
    response.status_code = 200 if delivery.duplicate else 202
    return dataclasses.asdict(delivery)


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["events"])
    read = [Depends(keys.require(Role.READ))]
    operate = [Depends(keys.require(Role.OPERATE))]

    @api.post("/processes/{process_id}/events/{name}", status_code=202, dependencies=operate, responses=ACTS,
              summary="Deliver an event: it resumes the process's wait_for(name), or is kept for a later one")
    async def send_event(process_id: str, name: str, flow: Flow, response: Response,
                         request: Annotated[EventRequest | None, Body()] = None) -> dict[str, Any]:
        request = request or EventRequest()
        return _delivered(await flow.signals.send(process_id, name, request.data, event_id=request.event_id),
                          response)

    @api.post("/cases/{case}/keys/{client_key}/events/{name}", status_code=202, dependencies=operate,
              responses=ACTS,
              summary="Deliver an event to the process of a case started with a client key")
    async def send_event_by_key(case: str, client_key: str, name: str, flow: Flow, response: Response,
                                request: Annotated[EventRequest | None, Body()] = None) -> dict[str, Any]:
        request = request or EventRequest()
        delivery = await flow.signals.send_by_key(case, client_key, name, request.data, event_id=request.event_id)
        return _delivered(delivery, response)

    @api.post("/processes/{process_id}/approval", status_code=202, dependencies=operate, responses=ACTS,
              summary="Approve or reject the approval step the process waits for (once: a second one changes nothing)")
    async def decide(process_id: str, request: ApprovalRequest, flow: Flow, response: Response) -> dict[str, Any]:
        delivery = await flow.signals.decide(process_id, approved=request.approved, comment=request.comment,
                                             by=request.by)
        return _delivered(delivery, response)

    @api.get("/cases/{case}/keys/{client_key}", dependencies=read, response_model=dict[str, Any],
             responses={**KEYED, **problem_responses(404)},
             summary="The process of a case started with a client key (the same view as GET /processes/{id})")
    async def get_by_key(case: str, client_key: str, flow: Flow) -> Response:
        return await process_response(flow, (await flow.get_by_key(case, client_key)).process_id)

    @api.post("/callbacks/{token}", status_code=202, responses=problem_responses(401, 404, 409, 410, 413, 422, 503),
              summary="Complete (or fail) a wait with its callback token; "
              "no API key: the token is the capability")
    async def callback(token: str, flow: Flow, request: CallbackRequest, response: Response) -> dict[str, Any]:
        try:
            delivery = await flow.signals.callback(token, ok=request.ok, data=request.data)
        except CallbackTokenError as exc:
            raise HTTPException(410 if exc.expired else 401, exc.message) from None
        response.status_code = 202
        return {"process_id": delivery.process_id, "name": delivery.name, "resumed": delivery.resumed,
                "status": delivery.status}

    return api
