"""The gateway's endpoints, one module per concern; each exposes ``router(keys)``."""

from __future__ import annotations

from fastapi import Request

from framework.app import Stageflow
from framework.jobs import Jobs


def flow_of(request: Request) -> Stageflow:
    """The open ``Stageflow`` the app was created with (a FastAPI dependency)."""
    return request.app.state.flow


def jobs_of(request: Request) -> Jobs:
    """The app's job runner (a FastAPI dependency)."""
    return request.app.state.jobs
