"""Fan-out / fan-in: one stage starts many tasks (service commands or child processes), a later stage joins them.

The items do not live in the process document: a fan-out of 10,000 items would make every transition
rewrite megabytes. They live in the store's item table, next to a small counter row per fan-out (the
"group", named by the parent's version when it fanned out). The parent waits without transitions while
items complete; each completion is one short store transaction that records the item, updates the
counters, decides the join policy and releases the next pending item (a sliding window of
``max_in_flight``). The completion that decides the fan-out publishes the join message, which resumes the
parent once (the parent's version check makes duplicates harmless).

Everything here is pure: the decision rule, the dispatch messages and the join result, so both stores and
the engine share one definition of each.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from framework.broker.base import INNER, command_queue
from framework.document import OutboxMessage, ParentRef
from framework.errors import StageError
from framework.messages import ItemDone, RunStage, ServiceCommand, StartChild
from framework.taskid import TaskIdSigner, TaskRef

MAX_ITEMS = 100_000
MAX_IN_FLIGHT = 1_000
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"  # the parent was cancelled while items were live (``cancel_items``): none runs after
_CHILD_NAMESPACE = uuid.UUID("6f1d3c52-9a1e-4f4e-8a55-3b0c1de0c0de")


@dataclass(frozen=True, slots=True)
class FanItem:
    """One task of a heterogeneous fan-out: a service command (``api`` + ``payload``) or a child process
    (``case`` + ``input``)."""

    api: str | None = None
    payload: Any = None
    case: str | None = None
    input: Any = None

    def spec(self) -> dict[str, Any]:
        if (self.api is None) == (self.case is None):
            raise StageError("a FanItem names exactly one of api= (a service command) or case= (a child process)")
        if self.api is not None:
            return {"api": self.api, "payload": self.payload}
        return {"case": self.case, "input": self.input if self.input is not None else {}}


@dataclass(frozen=True, slots=True)
class FanIn:
    """What the joining stage sees (``ctx.fan_in``): results in item order, ``None`` where an item failed or
    never ran (the fan-out was decided before it), and each failed item's error by index. ``group`` names the
    fan-out (the parent's version when it fanned out)."""

    group: int
    total: int
    succeeded: int
    failed: int
    results: list[Any]
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FanOutState:
    """The counter row of one fan-out."""

    group: int
    total: int
    window: int
    tolerate: int
    first: bool
    next_index: int  # items below this index have been released
    done: int
    failed: int
    decided: str | None  # None while open, then SUCCEEDED, FAILED or CANCELLED

    @property
    def in_flight(self) -> int:
        return 0 if self.decided == CANCELLED else self.next_index - self.done - self.failed

    def counts(self) -> dict[str, Any]:
        # Cancelled, every item that had not ended was cancelled with it: none is in flight or pending.
        cancelled = self.total - self.done - self.failed if self.decided == CANCELLED else 0
        return {
            "group": self.group, "total": self.total, "succeeded": self.done, "failed": self.failed,
            "in_flight": max(self.in_flight, 0), "pending": 0 if cancelled else self.total - self.next_index,
            "cancelled": cancelled, "decided": self.decided,
        }


@dataclass(frozen=True, slots=True)
class ItemRow:
    index: int
    status: str  # pending, dispatched, done, failed
    spec: dict[str, Any]
    result: Any
    error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class NewFanOut:
    """What the fan-out transition writes besides the document: the counter row and every item."""

    group: int
    specs: list[str]  # each item's spec as JSON text
    window: int
    tolerate: int
    first: bool

    @property
    def released(self) -> int:
        return min(self.window, len(self.specs))

    def initial_state(self) -> FanOutState:
        decided = SUCCEEDED if not self.specs else None
        return FanOutState(self.group, len(self.specs), self.window, self.tolerate, self.first, self.released, 0, 0,
                           decided)


@dataclass(frozen=True, slots=True)
class ItemCompletion:
    """The result of recording one item's outcome. ``applied`` is False for a duplicate (nothing written);
    ``release`` is the item to dispatch next (for a duplicate: the one its first completion released, if it
    is still running, so a crash between commit and publish is repaired by the redelivery)."""

    applied: bool
    state: FanOutState
    release: ItemRow | None
    newly_decided: bool


def complete(state: FanOutState, ok: bool) -> tuple[FanOutState, int | None]:
    """The counters after one more item finished, and the index it releases (None: nothing to release)."""
    done, failed = state.done + ok, state.failed + (not ok)
    decided = state.decided
    if decided is None:
        if state.first and done:
            decided = SUCCEEDED
        elif failed > state.tolerate:
            decided = FAILED
        elif done + failed >= state.total:
            decided = SUCCEEDED
    release = state.next_index if decided is None and state.next_index < state.total else None
    next_index = state.next_index + (release is not None)
    new = FanOutState(state.group, state.total, state.window, state.tolerate, state.first, next_index, done, failed,
                      decided)
    return new, release


def tolerated(tolerate: int | float, total: int, first: bool) -> int:
    """How many failed items a fan-out survives: a count, or a share of ``total`` (0.1 = 10 %)."""
    if first:
        return max(total - 1, 0)  # first success wins: only all failing fails it
    if isinstance(tolerate, bool) or not isinstance(tolerate, int | float) or tolerate < 0:
        raise StageError(f"fan_out(tolerate=...) must be a count >= 0 or a share between 0 and 1, got {tolerate!r}")
    if isinstance(tolerate, float):
        if tolerate > 1:
            raise StageError(f"fan_out(tolerate={tolerate}) as a share must be between 0 and 1")
        return math.floor(round(tolerate * total, 6))  # 0.29 * 100 is 28.999999999999996, meant as 29
    return tolerate


def child_process_id(parent_id: str, group: int, index: int) -> str:
    """Child processes get ids derived from their place, so dispatching one twice finds the first."""
    return str(uuid.uuid5(_CHILD_NAMESPACE, f"{parent_id}/{group}/{index}"))


def child_client_key(parent_id: str, group: int, index: int) -> str:
    return f"child:{parent_id}/{group}/{index}"


def dispatch_message(
    signer: TaskIdSigner, *, process_id: str, case: str, resume: str, group: int, index: int, spec: dict[str, Any]
) -> OutboxMessage:
    """The message that starts item ``index``: a service command carrying a signed taskId that names the item,
    or a request to start a child process."""
    message_id = f"{process_id}/{group}/item/{index}"
    if "api" in spec:
        task_id = signer.sign(TaskRef(process_id, case, spec["api"], resume, group, item=index))
        body = ServiceCommand(task_id, spec["api"], spec["payload"]).to_json()
        return OutboxMessage(command_queue(spec["api"]), message_id, body.decode())
    body = StartChild(process_id, case, group, index, spec["case"], spec["input"]).to_json()
    return OutboxMessage(INNER, message_id, body.decode())


def join_message(process_id: str, case: str, resume: str, group: int) -> OutboxMessage:
    """The message that resumes the parent once its fan-out is decided (the parent is still at ``group``)."""
    body = RunStage(process_id, case, resume, group).to_json().decode()
    return OutboxMessage(INNER, f"{process_id}/{group}/join", body)


def item_done_message(parent: ParentRef, child_id: str, *, ok: bool, result: Any, error: str | None) -> OutboxMessage:
    """What a finishing child process tells its parent."""
    body = ItemDone(parent.process_id, parent.case, parent.group, parent.index, ok, result, error,
                    child_id).to_json().decode()
    return OutboxMessage(INNER, f"{parent.process_id}/{parent.group}/done/{parent.index}", body)


def item_specs(items: Any, *, api: str | None, case: str | None, max_bytes: int) -> list[str]:
    """Each item's spec as JSON text, checked: a list of items, each small enough to be one message."""
    if api is not None and case is not None:
        raise StageError("fan_out() takes api= or case=, not both")
    if not isinstance(items, list | tuple):
        raise StageError(f"fan_out() needs a list of items, got {type(items).__name__}")
    if len(items) > MAX_ITEMS:
        raise StageError(f"fan_out() of {len(items)} items is over the limit of {MAX_ITEMS}",
                         hint="split the work into child processes that each fan out a part")
    specs = []
    for index, item in enumerate(items):
        if api is not None:
            spec = FanItem(api=api, payload=item).spec()
        elif case is not None:
            spec = FanItem(case=case, input=item).spec()
        elif isinstance(item, FanItem):
            spec = item.spec()
        else:
            raise StageError(f"fan_out() item {index} is a {type(item).__name__}: without api= or case=, every "
                             "item must be a FanItem")
        text = orjson.dumps(spec).decode()
        if len(text) > max_bytes // 2:
            raise StageError(f"fan_out() item {index} is {len(text)} bytes, over the {max_bytes // 2}-byte limit "
                             "for one item", hint="pass ids and let each task load its data")
        specs.append(text)
    return specs


def fan_in(state: FanOutState, rows: list[ItemRow]) -> FanIn:
    results: list[Any] = [None] * state.total
    errors: dict[int, str] = {}
    for row in rows:
        if row.status == "done":
            results[row.index] = row.result
        elif row.status == "failed":
            errors[row.index] = row.error or "failed"
    return FanIn(state.group, state.total, state.done, state.failed, results, errors)


def failure_reason(state: FanOutState, errors: dict[int, str]) -> str:
    shown = "; ".join(f"item {i}: {e}" for i, e in sorted(errors.items())[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return (f"fan-out failed: {state.failed} of {state.total} items failed, {state.tolerate} tolerated"
            f"{': ' + shown if shown else ''}{more}")
