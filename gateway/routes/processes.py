"""Start processes (directly or from a webhook), read one, list many."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Response

from framework.app import Stageflow
from framework.document import ProcessDocument
from framework.errors import InvalidInputError, ProcessNotFoundError, UnknownCaseError
from framework.search import parse_filters
from framework.state import FanOutWait
from framework.store.base import ProcessFilter
from gateway.auth import ApiKeys, Role
from gateway.models import ItemStatus, StartRequest, StatusFilter
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of
from gateway.views import decode_cursor, encode_cursor, epoch, item_view, process_view

Flow = Annotated[Stageflow, Depends(flow_of)]
STARTS = problem_responses(404, 409, 413)
NOT_FOUND = problem_responses(404)
INT32_MAX = 2**31 - 1  # the store's integer columns: a larger number is a 422, not a driver error


def _started(doc: ProcessDocument, created: bool, response: Response) -> dict[str, Any]:
    response.status_code = 201 if created else 200
    return {"process_id": doc.process_id, "case": doc.case, "status": doc.status.value, "created": created}


async def process_response(flow: Stageflow, process_id: str) -> Response:
    """The view of ``GET /processes/{id}``, encoded."""
    doc, history = await flow.get_with_history(process_id)
    case = flow.engine.cases.get(doc.case, doc.case_version)
    view = process_view(case, doc, history, flow.engine.clock.now())
    if isinstance(doc.waiting, FanOutWait):
        state = await flow.store.fan_out_state(process_id, doc.waiting.group)
        view["fan_out"] = state.counts() if state else None
    return Response(orjson.dumps(view), media_type="application/json")


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["processes"], responses=KEYED)
    read = [Depends(keys.require(Role.READ))]
    operate = [Depends(keys.require(Role.OPERATE))]

    @api.post("/cases/{case}/processes", status_code=201, dependencies=operate, responses=STARTS,
              summary="Start a process (200 if the client key already started one with the same input)")
    async def start_process(case: str, request: StartRequest, response: Response, flow: Flow) -> dict[str, Any]:
        doc, created = await flow.engine.start_process(
            case, request.input, client_key=request.client_key, start_at=request.start_at
        )
        return _started(doc, created, response)

    @api.post("/webhooks/{case}", status_code=201, dependencies=operate, responses=STARTS,
              summary="Start a process from a webhook body, mapped by the case's from_webhook")
    async def webhook(case: str, body: Annotated[dict[str, Any], Body()], response: Response,
                      flow: Flow) -> dict[str, Any]:
        case_cls = flow.engine.cases.latest(case)
        from_webhook = getattr(case_cls, "from_webhook", None)
        if from_webhook is None:
            raise UnknownCaseError(
                f"case {case!r} takes no webhooks", hint="give the case a `from_webhook(cls, body)` classmethod",
                case=case,
            )
        try:
            input_data, client_key, start_at = from_webhook(body)
        except (KeyError, ValueError, TypeError) as exc:
            message = f"the webhook body cannot be mapped: {type(exc).__name__}: {exc}"
            raise InvalidInputError(message, errors=[{"field": "(body)", "message": message}], case=case) from None
        doc, created = await flow.engine.start_process(case_cls, input_data, client_key=client_key,
                                                       start_at=start_at)
        return _started(doc, created, response)

    # The most frequent read (status polling): the view is plain JSON data, so it is encoded here and
    # returned as is, skipping the response model's validation; response_model only documents it.
    @api.get("/processes/{process_id}", dependencies=read, response_model=dict[str, Any], responses=NOT_FOUND,
             summary="A process: status, stage, progress, data, result, error, timings, history, waiting")
    async def get_process(process_id: str, flow: Flow) -> Response:
        return await process_response(flow, process_id)

    @api.get("/processes/{process_id}/items", dependencies=read, responses=NOT_FOUND,
             summary="The items of a fan-out (default: the one the process waits on), in index order, with a cursor")
    async def list_items(
        process_id: str,
        flow: Flow,
        group: int | None = Query(None, ge=0, le=INT32_MAX, description="the fan-out: the version it started at"),
        status: ItemStatus | None = None,
        after: int = Query(-1, ge=-1, le=INT32_MAX, description="`next_after` of the previous page"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        doc = await flow.get(process_id)
        if group is None:
            group = doc.waiting.group if isinstance(doc.waiting, FanOutWait) else None
        if group is None:
            fanned = [e["version"] for e in await flow.store.history(process_id) if e.get("event") == "fan_out"]
            group = fanned[-1] if fanned else None
        state = await flow.store.fan_out_state(process_id, group) if group is not None else None
        if state is None or group is None:  # (no group: no state)
            raise ProcessNotFoundError(f"process {process_id} has no fan-out{'' if group is None else f' {group}'}",
                                    hint="GET /processes/{id} shows its history; "
                                    "a fan_out entry's version is its group")
        rows = await flow.store.fan_out_items(process_id, group, status=status, after=after, limit=limit)
        return {
            "fan_out": state.counts(),
            "items": [item_view(process_id, group, row) for row in rows],
            "next_after": rows[-1].index if len(rows) == limit else None,
        }

    @api.get("/processes", dependencies=read, responses=NOT_FOUND,  # 404: an unknown case with search=
             summary="Process summaries, newest first, with a cursor")
    async def list_processes(
        flow: Flow,
        case: str | None = None,
        status: StatusFilter | None = Query(None, description="`retrying`: waiting to try a stage or call again"),
        failed_stage: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
        search: list[str] = Query([], description="`name=value`: a search attribute the case declares (needs case)"),
    ) -> dict[str, Any]:
        declared = flow.engine.cases.latest(case).search_attributes if case and search else {}
        where = ProcessFilter(case=case, status=status, failed_stage=failed_stage,
                              created_after=epoch(created_after), created_before=epoch(created_before),
                              search=parse_filters(declared, search, case=case))
        after = decode_cursor(cursor) if cursor else None
        items, _ = await flow.store.list_page(where, after=after, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if items else None
        next_cursor = encode_cursor((last["created_at"], last["process_id"])) if more and last else None
        return {"items": items, "next_cursor": next_cursor, "filter": dataclasses.asdict(where)}

    return api
