"""Background jobs: a bulk reprocess runs as an asyncio task of the gateway (or of the CLI) and records its
progress in the store, so any gateway can show it (``GET /jobs/{id}``).

A job walks its filter with the store's keyset cursor (``find_ids``) page by page and saves its progress
(done, failed, the last id handled, the newest errors) after every page; that save is also its heartbeat.
A job whose runner is gone (the gateway restarted or was killed) stops beating: once its heartbeat is
older than ``stale_after_s`` it is marked ``interrupted`` by whoever looks, and an operator may resume it
(``resume``): it goes on after the last id it handled. Resuming is explicit, so two gateways never
walk one job at once: a claim is a compare-and-set on the job's status, and each run has its own owner
token, so a runner that lost its job (it was resumed elsewhere) stops at its next save.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from framework.errors import InfrastructureError, JobNotFoundError, JobStateError, StageflowError
from framework.operations import Operations, reprocess_filter
from framework.store.base import Job, ProcessFilter

log = structlog.get_logger("stageflow.jobs")

REPROCESS = "reprocess"
KEEP_ERRORS = 20  # the newest errors kept in a job (the log has all of them)
SAVE_EVERY_S = 5.0  # progress (and the heartbeat) is saved after every page, or this often if pages are slow
COUNT_TIMEOUT_S = 2.0  # the total is shown only if counting the matches is this cheap


class Jobs:
    """Starts, runs, resumes and reads background jobs. One per gateway (or CLI run); no I/O until used."""

    def __init__(self, operations: Operations, *, name: str, stale_after_s: float = 60.0, page_size: int = 200) -> None:
        self.operations = operations
        self.store = operations.engine.store
        self.clock = operations.engine.clock
        self.name = name  # who runs the jobs started here, e.g. "gateway-3f2a"
        self.stale_after_s = stale_after_s
        self.page_size = page_size
        self._tasks: dict[str, asyncio.Task[Job]] = {}
        self._stopping = asyncio.Event()

    def _owner(self) -> str:
        return f"{self.name}/{uuid.uuid4().hex[:8]}"  # one token per run: see the module docstring

    async def start_reprocess(self, where: ProcessFilter, *, from_stage: str | None = None) -> Job:
        """Record a new reprocess job and start it in the background; return it at once."""
        job = await self.create_reprocess(where, from_stage=from_stage)
        self._spawn(job)
        return job

    async def create_reprocess(self, where: ProcessFilter, *, from_stage: str | None = None) -> Job:
        """Record a new reprocess job (running, owned by this runner) without running it: see ``run``."""
        where = reprocess_filter(where)  # a bad filter is refused here, before anything is written
        now = self.clock.now()
        params = {"filter": dataclasses.asdict(where), "from_stage": from_stage}
        job = Job(job_id=f"job-{uuid.uuid4().hex[:16]}", kind=REPROCESS, params=params, owner=self._owner(),
                  created_at=now, updated_at=now)
        await self.store.create_job(job)
        return job

    async def resume(self, job_id: str) -> Job:
        """Go on with an interrupted or failed job, in the background, after the last process it handled."""
        job = await self.claim(job_id)
        self._spawn(job)
        return job

    async def claim(self, job_id: str) -> Job:
        """Take over an interrupted or failed job to ``run`` it here."""
        await self._expire_stale()
        job = await self.store.claim_job(job_id, owner=self._owner(), now=self.clock.now(),
                                         from_statuses=("interrupted", "failed"))
        if job is None:
            current = await self.get(job_id)  # raises JobNotFoundError
            raise JobStateError(f"job {job_id} is {current.status}", hint="only interrupted or failed jobs resume")
        return job

    async def get(self, job_id: str) -> Job:
        await self._expire_stale()
        job = await self.store.load_job(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id!r}", hint="GET /jobs lists the newest jobs")
        return job

    async def recent(self, *, limit: int = 20) -> list[Job]:
        await self._expire_stale()
        return await self.store.list_jobs(limit=limit)

    async def run(self, job: Job, *, progress: Callable[[Job], None] | None = None) -> Job:
        """Run ``job`` here until it ends; save its progress after every page (and call ``progress``)."""
        where = ProcessFilter(**job.params["filter"])
        try:
            if job.total is None and job.cursor is None:  # counted once, at the start
                job.total = await self.store.count_matching(where, timeout_s=COUNT_TIMEOUT_S)
                await self._save(job, progress)
            walk = self.operations.reprocess_each(
                where, from_stage=job.params.get("from_stage"), after=job.cursor, page_size=self.page_size
            )
            async for process_id, reason in walk:
                if reason is None:
                    job.done += 1
                else:
                    job.failed += 1
                    job.errors = [*job.errors, {"process_id": process_id, "reason": reason}][-KEEP_ERRORS:]
                job.cursor = process_id
                if (job.done + job.failed) % self.page_size == 0 or self.clock.now() - job.updated_at > SAVE_EVERY_S:
                    await self._save(job, progress)
                if self._stopping.is_set():
                    raise _Stopped
            job.status = "completed"
        except _Stopped:
            job.status, job.error = "interrupted", "its gateway stopped while it ran"
        except asyncio.CancelledError:  # cut off mid-retry: the process in flight may be retried but not counted
            job.status, job.error = "interrupted", "its gateway stopped while it ran"
            await asyncio.shield(self._end(job, progress))
            raise
        except _Lost:
            log.warning("job taken over by another runner; stopping here", job_id=job.job_id)
            return job
        except InfrastructureError as exc:  # the store or broker is down: resume once it is back
            job.status, job.error = "interrupted", exc.message
        except StageflowError as exc:
            job.status, job.error = "failed", exc.message
        except Exception as exc:  # a bug: keep it visible on the job, and in the log
            log.exception("job failed", job_id=job.job_id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        await self._end(job, progress)
        return job

    async def shutdown(self, *, grace_s: float = 5.0) -> None:
        """Stop the jobs running here after the process each is retrying, saved as interrupted (resumable);
        cancel those that take longer than ``grace_s``."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self.run(job), name=f"job {job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def _save(self, job: Job, progress: Callable[[Job], None] | None) -> None:
        job.updated_at = self.clock.now()
        if not await self.store.save_job(job):
            raise _Lost
        if progress is not None:
            progress(job)

    async def _end(self, job: Job, progress: Callable[[Job], None] | None) -> None:
        job.ended_at = self.clock.now()
        try:
            await self._save(job, progress)
        except (_Lost, StageflowError) as exc:  # the job stays "running" until it goes stale: still visible
            log.warning("could not record the end of a job", job_id=job.job_id, status=job.status, error=repr(exc))
        log.info("job ended", job_id=job.job_id, status=job.status, done=job.done, failed=job.failed,
                 error=job.error)

    async def _expire_stale(self) -> None:
        now = self.clock.now()
        await self.store.interrupt_stale_jobs(stale_before=now - self.stale_after_s, now=now)


class _Lost(Exception):
    """This runner's job was claimed by another one."""


class _Stopped(Exception):
    """This runner is shutting down."""


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it: without the owner token, with a progress fraction when it can be known."""
    view = dataclasses.asdict(job)
    view["runner"] = view.pop("owner").split("/")[0]
    handled = job.done + job.failed
    view["progress"] = 1.0 if job.status == "completed" else (
        round(min(1.0, handled / job.total), 4) if job.total else None)
    return view
