"""Cases, stats, liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from framework.app import Stageflow
from framework.errors import StageflowError
from gateway.auth import ApiKeys, Role
from gateway.problems import problem
from gateway.routes import flow_of
from gateway.views import stats

Flow = Annotated[Stageflow, Depends(flow_of)]

STATS_SAMPLE = 1000  # stage durations come from the history of this many newest processes
PING_TIMEOUT_S = 5.0


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["system"])
    read = [Depends(keys.require(Role.READ))]

    @api.get("/cases", dependencies=read, summary="Registered cases with their versions and stages")
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

    @api.get("/stats", dependencies=read, summary="Counts by case and status, success rate, stage durations")
    async def get_stats(flow: Flow) -> dict[str, Any]:
        counts = await flow.store.count_by_case_and_status()
        durations = await flow.store.recent_stage_durations(STATS_SAMPLE)
        return stats(counts, durations, STATS_SAMPLE)

    @api.get("/healthz", summary="The gateway is alive (no key needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="The store and the broker are reachable (no key needed)")
    async def readyz(flow: Flow) -> Any:
        checks: dict[str, str] = {}
        for name, ping in (("store", flow.store.ping), ("broker", flow.broker.ping)):
            try:
                await asyncio.wait_for(ping(), PING_TIMEOUT_S)
                checks[name] = "ok"
            except (StageflowError, TimeoutError) as exc:
                checks[name] = getattr(exc, "message", None) or f"no answer within {PING_TIMEOUT_S:g} s"
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        response: JSONResponse = problem(503, "not ready: " + ", ".join(k for k, v in checks.items() if v != "ok"),
                                         checks=checks)
        return response

    return api
