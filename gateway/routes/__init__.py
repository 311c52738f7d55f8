"""The gateway's endpoints, one module per concern; each exposes ``router(keys)``.

The dependencies below are ``async def`` though they never wait: FastAPI runs a plain ``def`` dependency in
a worker thread, a thread hop on every request for one attribute read.
"""

from __future__ import annotations

from fastapi import Request

from framework.app import Stageflow
from framework.jobs import Jobs


async def flow_of(request: Request) -> Stageflow:
    """The open ``Stageflow`` the app was created with (a FastAPI dependency)."""
    return request.app.state.flow


async def jobs_of(request: Request) -> Jobs:
    """The app's job runner (a FastAPI dependency)."""
    return request.app.state.jobs
