"""The worker registry's heartbeat: a running worker's row in the store, so a deploy can see which releases run
and which (case, version) pairs each carries (``stageflow deploy status``).

The row is written when the worker starts and every ``interval_s`` after (wall-clock times: other machines read
them), and deleted when it stops; a row not refreshed for ``GONE_AFTER_BEATS`` of its heartbeats counts as gone
(a killed worker) and the next heartbeat of any worker deletes it. A heartbeat the store refuses is logged and
tried again at the next beat: the registry informs deploys, it never stops a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable

import structlog

from framework.errors import InfrastructureError
from framework.store.protocols import DeployStore
from framework.store.records import WorkerRow

log = structlog.get_logger("stageflow.heartbeat")

HEARTBEAT_S = 5.0


def default_release(carries: Iterable[tuple[str, int]]) -> str:
    """A release's label when ``STAGEFLOW_RELEASE`` is not set: a short hash of the (case, version) set it carries,
    so two deployments of the same cases share one."""
    text = ",".join(f"{case}:{version}" for case, version in sorted(set(carries)))
    return "cases-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def worker_id() -> str:
    """host:pid:short uuid (a pid is reused across hosts and, after a restart, on one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    def __init__(self, store: DeployStore, carries: Callable[[], Iterable[tuple[str, int]]], *,
                 release: str | None = None, interval_s: float = HEARTBEAT_S) -> None:
        # Read at each beat: stored workflows' versions join a running worker's registry (framework.workflows).
        self._carries = carries
        self.release = release or default_release(carries())  # named once, by what it started with
        self.worker_id = worker_id()
        self._store = store
        self._interval_s = interval_s
        self._started_at = time.time()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._started_at = time.time()
        await self._beat()  # listed at once, before the first message is taken
        self._task = asyncio.create_task(self._loop(), name="stageflow-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._store.remove_worker(self.worker_id)
        except InfrastructureError as exc:  # it will count as gone after three heartbeats
            log.warning("worker registry row not removed", error=str(exc))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._beat()

    async def _beat(self) -> None:
        carries = tuple(sorted(set(self._carries())))
        row = WorkerRow(self.worker_id, self.release, carries, self._started_at, time.time(), self._interval_s)
        try:
            await self._store.record_worker(row)
        except InfrastructureError as exc:
            log.warning("heartbeat not recorded", error=str(exc))
