"""What a stage sees and says: the process's input and store, a service reply, and one outcome.

A stage records exactly one outcome on its context (``next``, ``call``, ``complete`` or ``fail``); the
engine turns that outcome into the next state of the process document and the messages it publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Complete:
    result: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Outcome = Next | Call | Complete | Fail


@dataclass(slots=True)
class StageContext:
    """Passed to every stage run.

    ``store`` is the per-process dictionary that persists across stages: whatever a stage puts there is
    committed with its transition and visible to later stages and in the process status. Values must be
    JSON-serialisable. ``reply`` holds the service reply when this stage was resumed by one.
    """

    process_id: str
    case: str
    stage: str
    transition: int
    input: BaseModel
    store: dict[str, Any]
    reply: ServiceReply | None = None
    outcome: Outcome | None = field(default=None, init=False)

    def next(self, stage: str | None = None) -> None:
        """Go on to the next stage in order, or jump to ``stage``. From the last stage, completes."""
        self._set(Next(stage))

    def call(self, api: str, payload: Any = None, *, resume: str | None = None) -> None:
        """Send a command to service ``api``; its reply resumes the next stage (or ``resume``)."""
        if not isinstance(api, str) or not api:
            raise StageError("call() needs the service's api name as a non-empty string", stage=self.stage)
        self._set(Call(api, payload, resume))

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
                hint="a stage ends with exactly one of next(), call(), complete() or fail()",
                case=self.case,
                stage=self.stage,
                process_id=self.process_id,
            )
        self.outcome = outcome
