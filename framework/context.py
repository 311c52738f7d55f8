"""What a stage sees and says: the process's input and store, a service reply, and one outcome.

A stage records exactly one outcome on its context (``next``, ``call``, ``wait``, ``complete`` or ``fail``); the
engine turns that outcome into the next state of the process document and the messages it publishes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from framework.errors import StageError
from framework.fanout import FanIn
from framework.state import Event, Failure, ServiceReply

__all__ = ["Call", "Complete", "Fail", "FanOut", "Next", "Outcome", "ServiceReply", "StageContext", "Wait", "WaitFor"]

EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
APPROVAL_PREFIX = "approval:"  # a blueprint approval step waits for the event "approval:<step>"
DEFAULT_TOKEN_EXPIRY_S = 7 * 86400.0
TokenMaker = Callable[[str, float], str]  # (event name, expires_at) -> a signed callback token


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


@dataclass(frozen=True, slots=True)
class FanOut:
    items: Any
    api: str | None
    case: str | None
    max_in_flight: int
    tolerate: int | float
    first: bool
    resume: str | None
    timeout_s: float | None


@dataclass(frozen=True, slots=True)
class WaitFor:
    name: str
    resume: str | None = None
    timeout_s: float | None = None
    token: bool = False


Outcome = Next | Call | Wait | Complete | Fail | FanOut | WaitFor


@dataclass(slots=True)
class StageContext:
    """Passed to every stage run.

    ``store`` is the per-process dictionary that persists across stages: whatever a stage puts there is
    committed with its transition and visible to later stages and in the process status. Values must be
    JSON-serialisable. ``reply`` holds the service reply when this stage was resumed by one. ``attempt``
    is 1 on the first try of this stage and counts up on retries. ``failure`` describes the failure
    that led here when this stage is an ``on_failed`` path. ``fan_in`` holds the joined results when this
    stage resumes a ``fan_out``. ``event`` holds the event when a ``wait_for`` resumed this stage. ``search``
    holds the process's search attributes (those the case declares): set one and it is committed, typed and
    indexed, with the transition.
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
    failure: Failure | None = None
    fan_in: FanIn | None = None
    event: Event | None = None
    search: dict[str, Any] = field(default_factory=dict)
    tokens: TokenMaker | None = field(default=None, repr=False)
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

    def fan_out(
        self, items: Any, *, api: str | None = None, case: str | None = None, max_in_flight: int = 100,
        tolerate: int | float = 0, first: bool = False, resume: str | None = None, timeout_s: float | None = None,
    ) -> None:
        """Start one task per item, at most ``max_in_flight`` at once, then run the next stage (or ``resume``)
        once with ``ctx.fan_in`` holding the results in item order.

        With ``api=``, each item is the payload of a command to that service; with ``case=``, the input of a
        child process of that case; with neither, each item is a ``FanItem``. The fan-out fails (the stage's
        failure path applies) when more than ``tolerate`` items fail (a count, or a share such as 0.1); with
        ``first=True`` the first success decides. ``timeout_s`` bounds the whole fan-out.
        """
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or not 1 <= max_in_flight <= 1000:
            raise StageError(f"fan_out(max_in_flight={max_in_flight!r}) must be an int from 1 to 1000",
                             stage=self.stage)
        self._set(FanOut(items, api, case, max_in_flight, tolerate, first, resume, timeout_s))

    def wait_for(
        self, name: str, *, timeout_s: float | None = None, resume: str | None = None, token: bool = False
    ) -> str | None:
        """Wait for the event ``name`` (``flow.send_event``, ``POST /processes/{id}/events/{name}``), then run
        the next stage (or ``resume``) with ``ctx.event``. An event that came before the wait is taken at once.

        ``timeout_s`` bounds the wait: on expiry the stage's retry policy runs it again, then its failure path
        applies. ``token=True`` returns a signed single-use callback token (``POST /callbacks/{token}``) that
        expires with the wait (or after 7 days); else None.
        """
        _check_event_name(name, self.stage)
        if timeout_s is not None and not timeout_s > 0:
            raise StageError(f"wait_for(timeout_s={timeout_s!r}) must be a positive number of seconds",
                             stage=self.stage)
        self._set(WaitFor(name, resume, timeout_s, token))
        return self.callback_token(name, expires_s=timeout_s or DEFAULT_TOKEN_EXPIRY_S) if token else None

    def callback_token(self, name: str, *, expires_s: float = DEFAULT_TOKEN_EXPIRY_S) -> str:
        """A signed single-use token that delivers the event ``name`` to this process through
        ``POST /callbacks/{token}`` (no API key): hand it to a third party, e.g. in a ``ctx.call`` payload,
        and ``wait_for(name)`` in a later stage. It expires after ``expires_s``."""
        _check_event_name(name, self.stage)
        if self.tokens is None:
            raise StageError("callback tokens need the engine's signer", stage=self.stage)
        return self.tokens(name, self.now + float(expires_s))

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
                hint="a stage ends with exactly one of next(), call(), wait(), wait_for(), fan_out(), complete() "
                "or fail()",
                case=self.case,
                stage=self.stage,
                process_id=self.process_id,
            )
        self.outcome = outcome


def _check_event_name(name: object, stage: str) -> None:
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise StageError(f"event name {name!r} must be 1-100 letters, digits or _ . : -", stage=stage)
