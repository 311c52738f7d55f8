"""Schedules: list them (read key), pause and resume them (operate key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from framework.app import Stageflow
from gateway.auth import ApiKeys, Role
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of

Flow = Annotated[Stageflow, Depends(flow_of)]


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["schedules"], responses=KEYED)
    read = [Depends(keys.require(Role.READ))]
    operate = [Depends(keys.require(Role.OPERATE))]

    @api.get("/schedules", dependencies=read, summary="Schedules with their next and last ticks")
    async def schedules(flow: Flow) -> list[dict[str, Any]]:
        return await flow.schedules.list()

    @api.post("/schedules/{name}/pause", dependencies=operate, summary="Stop firing a schedule",
              responses=problem_responses(404, 413))
    async def pause(name: str, flow: Flow) -> dict[str, Any]:
        return await flow.schedules.pause(name)

    @api.post("/schedules/{name}/resume", dependencies=operate, responses=problem_responses(404, 413),
              summary="Fire a schedule again from its next tick (ticks during the pause are not fired)")
    async def resume(name: str, flow: Flow) -> dict[str, Any]:
        return await flow.schedules.resume(name)

    return api
