"""Background jobs (bulk reprocess): their progress, from any gateway, and resuming an interrupted one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from framework.jobs import Jobs, job_view
from gateway.auth import ApiKeys, Role
from gateway.problems import KEYED, problem_responses
from gateway.routes import jobs_of

JobRunner = Annotated[Jobs, Depends(jobs_of)]


def router(keys: ApiKeys) -> APIRouter:
    api = APIRouter(tags=["jobs"], responses=KEYED)
    read = [Depends(keys.require(Role.READ))]
    operate = [Depends(keys.require(Role.OPERATE))]

    @api.get("/jobs", dependencies=read, summary="The newest jobs, with their progress")
    async def list_jobs(jobs: JobRunner, limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
        return {"items": [job_view(job) for job in await jobs.recent(limit=limit)]}

    @api.get("/jobs/{job_id}", dependencies=read, responses=problem_responses(404),
             summary="A job: status (running, completed, failed, interrupted), total, done, failed, errors")
    async def get_job(job_id: str, jobs: JobRunner) -> dict[str, Any]:
        return job_view(await jobs.get(job_id))

    @api.post("/jobs/{job_id}/resume", status_code=202, dependencies=operate,
              responses=problem_responses(404, 409, 413),
              summary="Go on with an interrupted (or failed) job after the last process it handled")
    async def resume_job(job_id: str, jobs: JobRunner) -> dict[str, Any]:
        return job_view(await jobs.resume(job_id))

    return api
