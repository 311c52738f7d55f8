"""The HTTP gateway (FastAPI): start a process, read its status, health.

This is the first, small version: the full API (lists, operator actions, auth, admin page) builds on it.
Errors are RFC 9457 problem details; bad input changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from framework.app import Stageflow
from framework.errors import (
    InvalidInputError,
    ProcessConflictError,
    ProcessNotFoundError,
    StageflowError,
    UnknownCaseError,
)
from framework.settings import Settings

_STATUS_BY_ERROR: dict[type[StageflowError], int] = {
    InvalidInputError: 422,
    UnknownCaseError: 404,
    ProcessNotFoundError: 404,
    ProcessConflictError: 409,
}


class StartRequest(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict)
    client_key: str | None = Field(default=None, min_length=1, max_length=200)


def create_app(flow: Stageflow | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app. Pass an open ``flow`` (tests), or let the app open one from ``settings`` on startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if flow is not None:
            app.state.flow = flow
            yield
            return
        async with Stageflow.from_settings(settings or Settings(), connection_name="stageflow-gateway") as opened:
            app.state.flow = opened
            yield

    app = FastAPI(title="Stageflow gateway", version="0.1.0", lifespan=lifespan)
    if flow is not None:
        app.state.flow = flow

    @app.exception_handler(StageflowError)
    async def problem(request: Request, exc: StageflowError) -> JSONResponse:
        status = next((code for kind, code in _STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500)
        body: dict[str, Any] = {"type": "about:blank", "title": type(exc).__name__, "status": status,
                                "detail": exc.message}
        if exc.hint:
            body["hint"] = exc.hint
        if isinstance(exc, InvalidInputError):
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=status, media_type="application/problem+json")

    @app.post("/cases/{case}/processes", status_code=201)
    async def start_process(case: str, request: StartRequest, http: Request) -> dict[str, Any]:
        doc = await http.app.state.flow.start(case, request.input, client_key=request.client_key)
        return {"process_id": doc.process_id, "status": doc.status.value, "case": doc.case}

    @app.get("/processes/{process_id}")
    async def get_process(process_id: str, http: Request) -> dict[str, Any]:
        flow_: Stageflow = http.app.state.flow
        doc = await flow_.get(process_id)
        case = flow_.engine.cases.get(doc.case, doc.case_version)
        view = doc.public_view()
        done = len(case.stages) if doc.status.value == "completed" else (
            case.stage_named(doc.stage).index if doc.stage and case.stage_named(doc.stage) else 0
        )
        view["progress"] = {"stages_done": done, "stages_total": len(case.stages)}
        view["history"] = await flow_.store.history(process_id)
        return view

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
