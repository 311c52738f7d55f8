"""Execution graphs: a case's stages or a blueprint's steps, and one process's path through them (read key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from framework.app import Stageflow
from framework.graph_build import case_graph
from framework.graph_trace import trace
from gateway.auth import ApiKeys, Role
from gateway.graph_views import GraphView, graph_view
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of

Flow = Annotated[Stageflow, Depends(flow_of)]
NOT_FOUND = problem_responses(404)
INT32_MAX = 2**31 - 1


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["graphs"], responses=KEYED)
    read = [Depends(keys.require(Role.READ))]

    @api.get("/cases/{case}/graph", dependencies=read, responses=NOT_FOUND, response_model=GraphView,
             summary="A case's execution graph (stages or blueprint steps and the ways between them), laid out")
    async def get_case_graph(
        case: str, flow: Flow,
        version: int | None = Query(None, ge=1, le=INT32_MAX, description="a registered version (default: newest)"),
    ) -> GraphView:
        registry = flow.engine.cases
        case_cls = registry.latest(case) if version is None else registry.get(case, version)
        return graph_view(case_graph(case_cls))

    @api.get("/processes/{process_id}/graph", dependencies=read, responses=NOT_FOUND, response_model=GraphView,
             summary="A process's case graph with the path its history took, where it is now and where it failed")
    async def get_process_graph(process_id: str, flow: Flow) -> GraphView:
        doc, history = await flow.get_with_history(process_id)
        graph = case_graph(flow.engine.cases.get(doc.case, doc.case_version))
        return graph_view(graph, trace(graph, doc, history), process_id=doc.process_id, status=doc.status.value)

    return api
