"""The observer seam: hooks see each committed transition, each failed attempt, each parked message, and a
failing observer never breaks a transition."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from framework import BusinessCase, Observer, ProcessDocument, Retry, StageContext, Status, stage
from framework.broker.base import INNER, Outgoing
from framework.state import HistoryEntry, ResendWait, RetryWait
from framework.testing import run_cases


class Bumpy(BusinessCase):
    name = "bumpy"
    retry = Retry(attempts=3, backoff_s=1, jitter=0)

    class Input(BaseModel):
        fail_times: int

    @stage
    async def work(self, ctx: StageContext) -> None:
        if ctx.attempt <= ctx.input.fail_times:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        ctx.complete({"attempt": ctx.attempt})


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def process_started(self, doc: ProcessDocument) -> None:
        self.events.append(("started", (doc.version, doc.stage)))

    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        retry = isinstance(doc.waiting, RetryWait)
        self.events.append(("committed", (doc.version, entry["event"], doc.status.value, retry)))

    def retry_scheduled(self, doc: ProcessDocument, wait: RetryWait | ResendWait) -> None:
        self.events.append(("retry", (wait.stage if isinstance(wait, RetryWait) else wait.api, wait.attempt)))

    def stage_failed(self, doc: ProcessDocument, stage: str, reason: str, *, attempt: int, retryable: bool) -> None:
        self.events.append(("failed", (stage, reason, attempt, retryable)))

    def message_parked(self, queue: str, reason: str, *, kind: str) -> None:
        self.events.append(("parked", (queue, reason)))


class Broken(Observer):
    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        raise RuntimeError("an observer with a bug")


async def test_observers_see_transitions_failed_attempts_and_parked_messages() -> None:
    recorder = Recorder()
    async with run_cases([Bumpy], observers=[Broken(), recorder]) as env:
        doc = await env.run(Bumpy, {"fail_times": 1})
        await env.broker.publish([Outgoing(INNER, "junk", b"not json")])
        await env.join()
    assert doc.status is Status.COMPLETED and doc.result == {"attempt": 2}  # the broken observer changed nothing
    *transitions, (hook, (queue, reason)) = recorder.events
    assert transitions == [
        ("started", (1, "work")),
        ("failed", ("work", "ConnectionError: attempt 1 failed", 1, True)),
        ("committed", (2, "retry", "waiting", True)),
        ("retry", ("work", 2)),
        ("committed", (3, "completed", "completed", False)),
    ]
    assert (hook, queue) == ("parked", "inner") and reason.startswith("inner message is not signed")
