"""Step kinds kept in modules of their own (``db_query``: steps_db.py, ``notify``: steps_notify.py).

Each says three things, and the loader and compiler ask it instead of growing a branch per kind: the
expressions the step holds (checked on load like every other), what else is wrong with it (checks a schema
cannot make), and the stage body that runs it. Both kinds send one service command and are resumed by its
reply, like ``call``: ``keep`` reads ``reply``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from framework.blueprint import steps_db, steps_notify
from framework.context import StageContext

StepBody = Callable[[StageContext], None]
ExpressionField = tuple[list[Any], Any, frozenset[str], bool]  # path, value, data it may read, is a template


class Runtime(Protocol):
    """What a step body needs of the compiled blueprint (the compiler's ``_Runtime``)."""

    def data(self, ctx: StageContext, **extra: Any) -> dict[str, Any]: ...
    def evaluate(self, expression: str, data: Mapping[str, Any]) -> Any: ...
    def render(self, template: Any, data: Mapping[str, Any]) -> Any: ...
    def keep(self, ctx: StageContext, keep: Mapping[str, str], **extra: Any) -> None: ...
    def go_on(self, ctx: StageContext, target: str | None) -> None: ...
    def http_request(self, request: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CheckContext:
    """The blueprint being checked, and what is known of the deployment (None: not known here)."""

    data: dict[str, Any]
    where: Callable[[list[Any]], str]  # a path into the blueprint as messages show it
    connections: frozenset[str] | None = None


@dataclass(frozen=True)
class StepKind:
    expression_fields: Callable[[dict[str, Any]], Iterator[ExpressionField]]
    check: Callable[[dict[str, Any], int, CheckContext], Iterator[str]]
    body: Callable[[dict[str, Any], str, str | None, Runtime], StepBody]


STEP_KINDS: Mapping[str, StepKind] = {
    "db_query": StepKind(steps_db.expression_fields, steps_db.check, steps_db.body),
    "notify": StepKind(steps_notify.expression_fields, steps_notify.check, steps_notify.body),
}


def check_step_kinds(data: dict[str, Any], context: CheckContext) -> Iterator[str]:
    for index, step in enumerate(data["steps"]):
        kind = STEP_KINDS.get(step["kind"])
        if kind is not None:
            yield from kind.check(step, index, context)
