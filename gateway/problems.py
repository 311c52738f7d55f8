"""Errors as RFC 9457 problem details (``application/problem+json``), for every error the gateway returns.

Stageflow errors, FastAPI's own validation errors (422 naming each bad field), HTTP errors (401, 403,
404, 405, 413) and anything unexpected (500, with no traceback in the body) all get the same shape::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": "...",
     "error": "InvalidInputError", "hint": "...", "errors": [{"field": "...", "message": "..."}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from framework.errors import (
    CaseInactiveError,
    ConfigurationError,
    InfrastructureError,
    InvalidInputError,
    JobNotFoundError,
    JobStateError,
    ProcessConflictError,
    ProcessNotFoundError,
    ProcessStateError,
    ScheduleNotFoundError,
    StageError,
    StageflowError,
    UnknownCaseError,
    UnknownTemplateError,
    WorkflowConflictError,
)
from framework.registry import KNOWN_CASES_HINT

log = structlog.get_logger("stageflow.gateway")

MEDIA_TYPE = "application/problem+json"

_STATUS_BY_ERROR: tuple[tuple[type[StageflowError], int], ...] = (
    (InvalidInputError, 422),
    (StageError, 422),
    (UnknownCaseError, 404),
    (UnknownTemplateError, 404),
    (ProcessNotFoundError, 404),
    (ScheduleNotFoundError, 404),
    (JobNotFoundError, 404),
    (JobStateError, 409),
    (ProcessConflictError, 409),
    (ProcessStateError, 409),
    (CaseInactiveError, 409),
    (WorkflowConflictError, 409),
    (InfrastructureError, 503),
    (ConfigurationError, 500),
)


class Problem(BaseModel):
    """An RFC 9457 problem, as every error response of the gateway is."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    error: str | None = Field(None, description="the error's name, e.g. InvalidInputError")
    hint: str | None = Field(None, description="how to fix it, where there is a way")
    errors: list[dict[str, str]] | None = Field(None, description="422: each bad field (in, field, message)")


_MEANINGS = {
    401: "no API key, or one the gateway does not know",
    403: "a read key for an action that needs an operate key",
    404: "no such process, case, job or schedule",
    409: "the action conflicts with the current state (a taken client key, a finished process, a running job)",
    410: "the callback token has expired",
    413: "the request body is over STAGEFLOW_GATEWAY_MAX_BODY_BYTES",
    422: "invalid input (each bad field named), a NUL character, a number out of range, data the store refuses",
    503: "the store or the broker is unavailable; try again",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the problems a route really sends (``application/problem+json``)."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {status: {"model": Problem, "description": _MEANINGS[status], "content": {MEDIA_TYPE: {"schema": schema}}}
            for status in statuses}


KEYED = problem_responses(401, 403, 422, 503)  # every route that needs a key


class BodyTooLarge(HTTPException):
    """Raised while a request body streams in, once it passes the limit (an HTTPException, so FastAPI's body
    parsing lets it through unchanged)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def problem(status: int, detail: str | None = None, *, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> dict[str, str]:
    where, *path = loc or ("body",)
    return {"in": str(where), "field": ".".join(str(p) for p in path) or f"({where})"}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem response."""

    @app.exception_handler(StageflowError)
    async def stageflow_error(request: Request, exc: StageflowError) -> JSONResponse:
        status = next((code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind)), 500)
        errors = exc.errors if isinstance(exc, InvalidInputError) else None
        message, hint = exc.message, exc.hint
        if isinstance(exc, UnknownCaseError) and (hint or "").startswith(KNOWN_CASES_HINT):  # not for any caller
            hint = "GET /cases lists the cases (read key)"
        elif isinstance(exc, InfrastructureError | ConfigurationError):  # the driver's text stays in the log
            log.warning("gateway request failed", path=request.url.path, error=str(exc))
            message, hint = ("the store or the broker is unavailable; try again" if status == 503
                             else "the gateway is misconfigured; it has been logged"), None
        return problem(status, message, error=type(exc).__name__, hint=hint, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**_field(err.get("loc", ())), "message": err.get("msg", "invalid")} for err in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, f"invalid request: {detail}", error="RequestValidationError", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8): a broken body, like bad JSON
            return problem(422, "the request body is not valid JSON text", error="RequestValidationError")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected gateway error", path=request.url.path)
        return problem(500, "an unexpected error occurred; it has been logged", error="InternalError")
