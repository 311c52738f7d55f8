"""What a stage sees and says: the process's input and store, a service reply, and one outcome.

A stage records exactly one outcome on its context (``next``, ``call``, ``wait``, ``complete`` or ``fail``); the
engine turns that outcome into the next state of the process document and the messages it publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from framework.errors import StageError


@dataclass(frozen=True, slots=True)
class ServiceReply:
    """A service's answer to a command: ``data`` when ``ok``, else ``error``."""

    api: str
    ok: bool
    data: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Next:
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    api: str
    payload: Any
    resume: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    until: float
    then: str | None = None


@dataclass(frozen=True, slots=True)
class Complete:
    result: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Outcome = Next | Call | Wait | Complete | Fail


@dataclass(slots=True)
class StageContext:
    """Passed to every stage run.

    ``store`` is the per-process dictionary that persists across stages: whatever a stage puts there is
    committed with its transition and visible to later stages and in the process status. Values must be
    JSON-serialisable. ``reply`` holds the service reply when this stage was resumed by one. ``attempt``
    is 1 on the first try of this stage and counts up on retries. ``failure`` describes the failure
    that led here when this stage is an ``on_failed`` path.
    """

    process_id: str
    case: str
    stage: str
    transition: int
    input: BaseModel
    store: dict[str, Any]
    now: float
    reply: ServiceReply | None = None
    attempt: int = 1
    failure: dict[str, Any] | None = None
    outcome: Outcome | None = field(default=None, init=False)

    def next(self, stage: str | None = None) -> None:
        """Go on to the next stage in order, or jump to ``stage``. From the last stage, completes."""
        self._set(Next(stage))

    def call(
        self, api: str, payload: Any = None, *, resume: str | None = None, timeout_s: float | None = None
    ) -> None:
        """Send a command to service ``api``; its reply resumes the next stage (or ``resume``).

        ``timeout_s`` (default: the stage's ``reply_timeout_s``) bounds the wait for the reply; on expiry
        the stage's retry policy re-sends the same command (same taskId), then its failure path applies.
        """
        if not isinstance(api, str) or not api:
            raise StageError("call() needs the service's api name as a non-empty string", stage=self.stage)
        self._set(Call(api, payload, resume, timeout_s))

    def wait(
        self, seconds: float | None = None, *, until: datetime | float | None = None, then: str | None = None
    ) -> None:
        """Wait ``seconds`` (or until ``until``: an aware datetime or epoch seconds), then run the next stage
        (or ``then``). The wait is a due time in the store: no worker holds anything while it lasts."""
        if (seconds is None) == (until is None):
            raise StageError("wait() takes seconds or until=, exactly one of them", stage=self.stage)
        if seconds is not None:
            due = self.now + float(seconds)
        elif isinstance(until, datetime):
            if until.tzinfo is None:
                raise StageError("wait(until=...) needs a timezone-aware datetime", stage=self.stage)
            due = until.timestamp()
        else:
            due = float(until)  # type: ignore[arg-type]
        self._set(Wait(due, then))

    def complete(self, result: Any = None) -> None:
        """End the process successfully with ``result``."""
        self._set(Complete(result))

    def fail(self, reason: str) -> None:
        """End the process as failed, recording ``reason``."""
        self._set(Fail(str(reason)))

    def _set(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            raise StageError(
                f"stage {self.stage!r} chose two outcomes ({self.outcome} then {outcome})",
                hint="a stage ends with exactly one of next(), call(), wait(), complete() or fail()",
                case=self.case,
                stage=self.stage,
                process_id=self.process_id,
            )
        self.outcome = outcome
