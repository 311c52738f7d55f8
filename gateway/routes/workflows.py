"""Workflows (stored blueprints) and the templates they can be made from.

Reads need a read key; creating, changing, validating, activating and deactivating need an operate key. Every
change is a new version; new processes start on the newest, running ones keep theirs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from framework.app import Stageflow
from framework.blueprint.templates import TemplateLibrary
from gateway.auth import ApiKeys, Role
from gateway.models import ChangeRequest, TemplateRequest, WorkflowRequest
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of

Flow = Annotated[Stageflow, Depends(flow_of)]
CHANGES = {**KEYED, **problem_responses(404, 409, 413, 422)}
async def _templates(flow: Flow) -> TemplateLibrary:
    return TemplateLibrary(tuple(flow.settings.blueprint_templates))


Templates = Annotated[TemplateLibrary, Depends(_templates)]


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["workflows"])
    read = [Depends(keys.require(Role.READ))]
    operate = [Depends(keys.require(Role.OPERATE))]

    @api.get("/workflows", dependencies=read, responses=KEYED, summary="Stored workflows, newest version of each")
    async def list_workflows(flow: Flow) -> list[dict[str, Any]]:
        return await flow.workflows.summaries()

    @api.post("/workflows", status_code=201, dependencies=operate, responses=CHANGES,
              summary="Create a workflow from a blueprint: version 1, active")
    async def create_workflow(request: WorkflowRequest, flow: Flow) -> dict[str, Any]:
        return await flow.workflows.create(request.definition, by=request.by or "")

    @api.post("/workflows/validate", dependencies=operate, responses=CHANGES,
              summary="Check a blueprint without saving it: every problem, each with its step and field")
    async def validate_workflow(request: WorkflowRequest, flow: Flow) -> dict[str, Any]:
        return flow.workflows.validate(request.definition)

    @api.get("/workflows/{name}", dependencies=read, responses={**KEYED, **problem_responses(404)},
             summary="A workflow: its versions (who saved each, when) and a version's blueprint (the newest)")
    async def get_workflow(name: str, flow: Flow, version: int | None = None) -> dict[str, Any]:
        return await flow.workflows.get(name, version)

    @api.put("/workflows/{name}", dependencies=operate, responses=CHANGES,
             summary="Change a workflow: a new version that new processes start on (running ones keep theirs)")
    async def update_workflow(name: str, request: WorkflowRequest, flow: Flow) -> dict[str, Any]:
        return await flow.workflows.update(name, request.definition, by=request.by or "")

    @api.post("/workflows/{name}/activate", dependencies=operate, responses=CHANGES,
              summary="Let new processes start on a workflow again")
    async def activate(name: str, flow: Flow, request: ChangeRequest | None = None) -> dict[str, Any]:
        return await flow.workflows.set_active(name, True, by=(request.by if request else None) or "")

    @api.post("/workflows/{name}/deactivate", dependencies=operate, responses=CHANGES,
              summary="Stop new processes of a workflow (running ones go on)")
    async def deactivate(name: str, flow: Flow, request: ChangeRequest | None = None) -> dict[str, Any]:
        return await flow.workflows.set_active(name, False, by=(request.by if request else None) or "")

    @api.get("/templates", dependencies=read, responses=KEYED, summary="Workflow templates with their parameters")
    async def list_templates(templates: Templates) -> list[dict[str, Any]]:
        return [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in templates]

    @api.get("/templates/{name}", dependencies=read, responses={**KEYED, **problem_responses(404)},
             summary="A template: its parameters and blueprint")
    async def get_template(name: str, templates: Templates) -> dict[str, Any]:
        return templates.get(name).describe()

    @api.post("/templates/{name}", status_code=201, dependencies=operate, responses=CHANGES,
              summary="Create a workflow from a template with parameter values")
    async def create_from_template(name: str, request: TemplateRequest, templates: Templates, flow: Flow
                                   ) -> dict[str, Any]:
        blueprint = templates.get(name).render(request.parameters, name=request.name)
        return await flow.workflows.create(blueprint, by=request.by or "")

    return api
