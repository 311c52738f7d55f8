"""The typed state of a process: what it waits for, what resumed its stage, its failures and history entries.

Each kind of wait is a small frozen dataclass, and ``Wait`` is their union: code that handles waits ``match``es
on the type, so the type checker finds every place a new kind must be handled. On the wire and in the store
a wait is JSON with a ``kind`` tag (``to_json``/``wait_from_json``); the tags and keys are the ones the status
API has always shown, so a stored document of an older release reads back unchanged.

``Resumed`` is what resumed a stage (a service reply, a fan-in, an event, a failure): a retry of the stage carries it in
its ``RetryWait``, so every attempt of a stage sees what the first one saw (DESIGN.md, point 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict

from framework.errors import MessageError


@dataclass(frozen=True, slots=True)
class ServiceReply:
    """A service's answer to a command: ``data`` when ``ok``, else ``error``."""

    api: str
    ok: bool
    data: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A stage that failed for good (``error``), or that the process went on from (``failures``)."""

    stage: str | None
    reason: str
    at: float
    version: int
    attempts: int | None = None
    went_to: str | None = None  # the on_failed (or next, for an optional stage) stage the process went on to
    poison: bool = False  # its message kept crashing or killing workers

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An external event delivered to a process (``send_event``, a callback): kept on the document's record.

    ``consumed`` is the version of the transition whose wait took it (None: kept, not waited for yet);
    ``ok`` is False for a callback that reported a failure."""

    name: str
    id: str
    data: Any
    at: float
    ok: bool = True
    consumed: int | None = None


# -- what resumed a stage --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyResumed:
    kind: Literal["reply"] = "reply"
    reply: ServiceReply


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinResumed:
    """The fan-out ``group`` joined: the fan-in is read from the store's item rows, never copied here."""

    kind: Literal["join"] = "join"
    group: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureResumed:
    """An ``on_failed`` stage (or the stage after an optional one) runs because of ``failure``."""

    kind: Literal["failure"] = "failure"
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class EventResumed:
    """A ``wait_for`` took ``event``: the resumed stage sees it as ``ctx.event``."""

    kind: Literal["event"] = "event"
    event: Event


Resumed = ReplyResumed | JoinResumed | FailureResumed | EventResumed


def resumed_from_json(data: dict[str, Any] | None) -> Resumed | None:
    match data:
        case None:
            return None
        case {"kind": "reply", "reply": dict(reply)}:
            return ReplyResumed(reply=ServiceReply(**reply))
        case {"kind": "join", "group": int(group)}:
            return JoinResumed(group=group)
        case {"kind": "failure", "failure": dict(failure)}:
            return FailureResumed(failure=Failure.from_json(failure))
        case {"kind": "event", "event": dict(event)}:
            return EventResumed(event=Event(**event))
    raise MessageError(f"unreadable resumption {data!r}")


# -- waits -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerWait:
    """A durable wait (``ctx.wait``) or a start date; then ``stage`` runs."""

    kind: Literal["timer"] = "timer"
    reason: Literal["wait", "start"]
    stage: str
    until: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryWait:
    """A failed stage's retry backoff; ``resumed`` is what resumed the failed attempt, for the next one."""

    kind: Literal["timer"] = "timer"
    reason: Literal["retry"] = "retry"
    stage: str
    until: float
    attempt: int
    error: str
    resumed: Resumed | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceWait:
    """A service command is out; its reply (carrying ``task_id``) resumes ``resume``. ``from_stage`` asked."""

    kind: Literal["service"] = "service"
    api: str
    task_id: str
    resume: str
    from_stage: str
    since: float
    attempt: int = 1
    deadline: float | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResendWait:
    """A service call failed and is retried: at ``until`` the same ``command`` (same taskId) goes out again."""

    kind: Literal["resend"] = "resend"
    api: str
    task_id: str
    resume: str
    from_stage: str
    since: float
    attempt: int
    until: float
    error: str
    command: str
    timeout_s: float | None = None

    def service_wait(self, now: float) -> ServiceWait:
        deadline = now + self.timeout_s if self.timeout_s else None
        return ServiceWait(api=self.api, task_id=self.task_id, resume=self.resume, from_stage=self.from_stage,
                           since=now, attempt=self.attempt, deadline=deadline, timeout_s=self.timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class FanOutWait:
    """Fan-out ``group`` is running (its items live in the store); its join resumes ``resume`` once."""

    kind: Literal["fan_out"] = "fan_out"
    group: int
    resume: str
    from_stage: str
    total: int
    since: float
    deadline: float | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventWait:
    """``from_stage`` waits for the event ``name`` (``ctx.wait_for``); it resumes ``resume``. Optional deadline."""

    kind: Literal["event"] = "event"
    name: str
    resume: str
    from_stage: str
    since: float
    deadline: float | None = None
    timeout_s: float | None = None
    token: bool = False  # a callback token was handed out for it


Wait = TimerWait | RetryWait | ServiceWait | ResendWait | FanOutWait | EventWait
CallWait = ServiceWait | ResendWait  # a wait a service reply can end

_WAIT_TYPES: dict[str, type[ServiceWait] | type[ResendWait] | type[FanOutWait] | type[EventWait]] = {
    "service": ServiceWait, "resend": ResendWait, "fan_out": FanOutWait, "event": EventWait,
}


def wait_from_json(data: dict[str, Any] | None) -> Wait | None:
    if data is None:
        return None
    values = dict(data)
    kind = values.pop("kind", None)
    if "from" in values:  # written by releases before the typed state
        values["from_stage"] = values.pop("from")
    if "fan_in" in values:
        group = values.pop("fan_in")
        values["resumed"] = None if group is None else {"kind": "join", "group": group}
    try:
        if kind == "timer":
            if values.get("reason") == "retry":
                del values["reason"]
                resumed = resumed_from_json(values.pop("resumed", None))
                return RetryWait(**values, resumed=resumed)
            return TimerWait(**values)
        return _WAIT_TYPES[kind](**values)
    except (KeyError, TypeError) as exc:
        raise MessageError(f"unreadable wait {data!r}: {exc}") from None


def due_time(wait: Wait | None) -> float | None:
    """When ``wait`` ends by itself: a timer's ``until``, or a reply's or a fan-out's ``deadline``."""
    match wait:
        case TimerWait(until=until) | RetryWait(until=until) | ResendWait(until=until):
            return until
        case ServiceWait(deadline=deadline) | FanOutWait(deadline=deadline) | EventWait(deadline=deadline):
            return deadline
    return None


def fire_target(wait: Wait | None) -> str | None:
    """The stage named in the message that fires ``wait`` when its time comes."""
    match wait:
        case TimerWait(stage=stage) | RetryWait(stage=stage):
            return stage
        case ServiceWait(resume=resume) | ResendWait(resume=resume) | FanOutWait(resume=resume) \
                | EventWait(resume=resume):
            return resume
    return None


def resumable_stages(wait: Wait | None) -> tuple[str, ...]:
    """The stages ``wait`` may resume the process at without a new start: the one its firing, reply, event or
    join runs, and for a call, fan-out or event the stage that asked (a failed reply or a deadline fails it, then
    its ``on_failed`` path, which that stage's case version defines)."""
    match wait:
        case TimerWait(stage=stage) | RetryWait(stage=stage):
            return (stage,)
        case ServiceWait(resume=resume, from_stage=asked) | ResendWait(resume=resume, from_stage=asked) \
                | FanOutWait(resume=resume, from_stage=asked) | EventWait(resume=resume, from_stage=asked):
            return (resume, asked)
    return ()


def is_retrying(wait: Wait | None) -> bool:
    """Waiting to try a failed stage or service call again (the ``retrying`` status filter)."""
    return isinstance(wait, RetryWait | ResendWait)


# -- history -----------------------------------------------------------------------------------------------


class HistoryEntry(TypedDict, total=False):
    """One transition in the process's history, as the store keeps it: only the keys an event has. A typed
    dict, not a dataclass: it is written once per transition and goes to the store as it is."""

    version: Required[int]
    at: Required[float]
    stage: str | None
    event: str
    duration_ms: float
    to: str
    api: str
    until: float
    attempt: int
    error: str
    reason: str
    items: int
    start_at: float
    input_changed: bool
    completed: bool  # a failure path that ended the process (no stage left to go to)
