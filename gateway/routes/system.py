"""Cases, stats, liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.responses import JSONResponse, PlainTextResponse

from framework.app import Stageflow
from framework.errors import StageflowError
from gateway.auth import ApiKeys, Role, api_key_header
from gateway.metrics import CONTENT_TYPE
from gateway.problems import KEYED, problem, problem_responses
from gateway.routes import flow_of
from gateway.views import STATS_SAMPLE, stats

Flow = Annotated[Stageflow, Depends(flow_of)]

PING_TIMEOUT_S = 5.0


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["system"])
    read = [Depends(keys.require(Role.READ))]

    @api.get("/cases", dependencies=read, responses=KEYED, summary="Registered cases with their versions and stages")
    async def cases(flow: Flow) -> list[dict[str, Any]]:
        registry = flow.engine.cases
        return [
            {
                "name": case.name, "version": case.version, "versions": registry.versions(case.name),
                "stages": [spec.name for spec in case.stages], "webhook": hasattr(case, "from_webhook"),
                "input_schema": case.Input.model_json_schema(),
            }
            for case in sorted(registry, key=lambda c: c.name)
        ]

    @api.get("/stats", dependencies=read, responses=KEYED,
             summary="Counts by case and status, success rate, stage durations")
    async def get_stats(request: Request, response: Response) -> dict[str, Any]:
        cached, age_s = await request.app.state.stats.get()
        response.headers["Age"] = str(int(age_s))
        return {**stats(cached["counts"], cached["durations"], STATS_SAMPLE), "last_hour": cached["last_hour"],
                "age_s": round(age_s, 1)}

    @api.get("/metrics", dependencies=read, responses=KEYED, response_class=PlainTextResponse,
             summary="Prometheus text format: processes by case and status, gateway requests and latency")
    async def metrics(request: Request) -> PlainTextResponse:
        cached, age_s = await request.app.state.stats.get()
        body = request.app.state.metrics.render(cached["counts"], age_s)
        return PlainTextResponse(body, media_type=CONTENT_TYPE)

    @api.get("/healthz", responses=problem_responses(422), summary="The gateway is alive (no key needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", responses=problem_responses(422, 503),
             summary="The store and the broker are reachable (no key needed; a read key shows each check)")
    async def readyz(flow: Flow, api_key: str | None = Security(api_key_header)) -> Any:
        checks: dict[str, str] = {}
        for name, ping in (("store", flow.store.ping), ("broker", flow.broker.ping)):
            try:
                await asyncio.wait_for(ping(), PING_TIMEOUT_S)
                checks[name] = "ok"
            except (StageflowError, TimeoutError) as exc:
                checks[name] = getattr(exc, "message", None) or f"no answer within {PING_TIMEOUT_S:g} s"
        ready = all(v == "ok" for v in checks.values())
        if keys.role_of(api_key) == Role.NONE:  # anyone may ask; only a key holder learns what is wrong
            return {"status": "ready"} if ready else problem(503, "unavailable")
        if ready:
            return {"status": "ready", "checks": checks}
        response: JSONResponse = problem(503, "not ready: " + ", ".join(k for k, v in checks.items() if v != "ok"),
                                         checks=checks)
        return response

    return api
