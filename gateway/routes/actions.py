"""Operator actions: retry, cancel (``flow.operations``), reprocess (a background job); all need an operate key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response

from framework.app import Stageflow
from framework.document import ProcessDocument
from framework.jobs import Jobs, job_view
from framework.store.base import ProcessFilter
from gateway.auth import ApiKeys, Role
from gateway.models import CancelRequest, ReprocessRequest, RetryRequest
from gateway.problems import KEYED, problem_responses
from gateway.routes import flow_of, jobs_of
from gateway.views import epoch

Flow = Annotated[Stageflow, Depends(flow_of)]
JobRunner = Annotated[Jobs, Depends(jobs_of)]


def _state(doc: ProcessDocument) -> dict[str, Any]:
    return {"process_id": doc.process_id, "status": doc.status.value, "stage": doc.stage, "version": doc.version}


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["operator actions"], dependencies=[Depends(keys.require(Role.OPERATE))],
                    responses={**KEYED, **problem_responses(413)})

    @api.post("/processes/reprocess", status_code=202,
              summary="Start a job that retries every process matching a filter (failed by default)")
    async def reprocess(request: ReprocessRequest, jobs: JobRunner, response: Response) -> dict[str, Any]:
        where = ProcessFilter(case=request.case, status=request.status, failed_stage=request.failed_stage,
                              created_after=epoch(request.created_after),
                              created_before=epoch(request.created_before))
        job = await jobs.start_reprocess(where, from_stage=request.from_stage)
        response.headers["Location"] = f"/jobs/{job.job_id}"
        return job_view(job)

    @api.post("/processes/{process_id}/retry", summary="Run a failed or cancelled process again",
              responses=problem_responses(404, 409))
    async def retry(process_id: str, flow: Flow,
                    request: Annotated[RetryRequest | None, Body()] = None) -> dict[str, Any]:
        request = request or RetryRequest()
        return _state(await flow.operations.retry(process_id, from_stage=request.from_stage, input=request.input))

    @api.post("/processes/{process_id}/cancel", summary="Cancel a process that has not finished",
              responses=problem_responses(404, 409))
    async def cancel(process_id: str, flow: Flow,
                     request: Annotated[CancelRequest | None, Body()] = None) -> dict[str, Any]:
        request = request or CancelRequest()
        return _state(await flow.operations.cancel(process_id, reason=request.reason))

    return api
