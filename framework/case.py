"""Declaring business cases: ``BusinessCase`` subclasses whose ``@stage`` methods run in order.

A case is checked as soon as its class is defined, so a mistake (a stage that is not ``async``, two
stages with one name, ``ctx.next(stage="typo")``) fails at import with a message saying how to fix it,
not in production at 3 a.m. when a process first reaches that line.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from framework.errors import CaseDefinitionError, InvalidInputError
from framework.policies import NO_RETRY, Retry
from framework.schedules import Schedule
from framework.search import check_declaration

if TYPE_CHECKING:
    from framework.context import StageContext

StageFunction = Callable[[Any, "StageContext"], Awaitable[None]]

_STAGE_MARK = "__stageflow_stage__"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class StageOptions:
    """How a stage behaves when it fails or takes too long (see ``stage``)."""

    name: str | None = None
    retry: Retry | None = None
    timeout_s: float | None = None
    reply_timeout_s: float | None = None
    on_failed: str | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage of a case: its name, its position, the method that runs it and its failure options."""

    name: str
    index: int
    function: StageFunction
    retry: Retry
    timeout_s: float | None
    reply_timeout_s: float | None
    on_failed: str | None
    optional: bool


def stage(
    function: StageFunction | None = None,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout_s: float | None = None,
    reply_timeout_s: float | None = None,
    on_failed: str | None = None,
    optional: bool = False,
) -> Any:
    """Mark an ``async def`` method of a ``BusinessCase`` as a stage; stages run in definition order.

    ``retry``: the stage's retry policy (default: the case's ``retry``). ``timeout_s``: how long one run of
    the stage may take. ``reply_timeout_s``: how long a service reply to this stage's ``ctx.call`` may
    take (default: the case's). When the stage has failed for good, the process goes to ``on_failed`` if
    set, or on to the next stage if ``optional`` (the failure is recorded either way), else it fails.
    """
    options = StageOptions(name, retry, timeout_s, reply_timeout_s, on_failed, optional)

    def mark(fn: StageFunction) -> StageFunction:
        setattr(fn, _STAGE_MARK, options)
        return fn

    return mark(function) if function is not None else mark


class EmptyInput(BaseModel):
    """Input model of a case that takes no input."""

    model_config = ConfigDict(extra="forbid")


class BusinessCase:
    """Base class of every business case.

    Subclass it, set ``name`` and ``version``, give it an ``Input`` pydantic model, and define stages::

        class Order(BusinessCase):
            name = "order"
            version = 1

            class Input(BaseModel):
                order_id: str

            @stage
            async def reserve(self, ctx):
                ctx.call("inventory", {"order_id": ctx.input.order_id})

            @stage
            async def finish(self, ctx):
                ctx.complete({"reserved": ctx.reply.data})

    Pass ``abstract=True`` in the class statement for a base class that shares code but has no stages.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    Input: ClassVar[type[BaseModel]] = EmptyInput
    retry: ClassVar[Retry] = NO_RETRY  # default policy of every stage without its own
    reply_timeout_s: ClassVar[float | None] = None  # default wait for a service reply (None: no limit)
    stages: ClassVar[tuple[StageSpec, ...]] = ()
    schedules: ClassVar[Sequence[Schedule]] = ()  # start a process on each tick (see framework.schedules)
    search_attributes: ClassVar[Mapping[str, type]] = {}  # typed, indexed values stages set (framework.search)
    _stage_by_name: ClassVar[dict[str, StageSpec]] = {}

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        cls.name = cls.__dict__.get("name") or _snake_case(cls.__name__)
        cls.stages = _collect_stages(cls)
        _validate_case(cls)
        cls._stage_by_name = {spec.name: spec for spec in cls.stages}
        cls.schedules = tuple(_bind_schedule(cls, schedule) for schedule in cls.schedules)
        cls.search_attributes = check_declaration(cls.__name__, cls.search_attributes)

    @classmethod
    def stage_named(cls, name: str) -> StageSpec | None:
        return cls._stage_by_name.get(name)

    @classmethod
    def stage_after(cls, name: str) -> StageSpec | None:
        """The stage that follows ``name`` in definition order, or None after the last one."""
        index = cls._stage_by_name[name].index + 1
        return cls.stages[index] if index < len(cls.stages) else None

    @classmethod
    def validate_input(cls, data: Any) -> BaseModel:
        """Validate process input, raising ``InvalidInputError`` that names every bad field."""
        try:
            if isinstance(data, cls.Input):
                return data
            return cls.Input.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in err["loc"]) or "(input)", "message": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            fields = ", ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidInputError(
                f"invalid input for case {cls.name!r}: {fields}", errors=errors, case=cls.name
            ) from None


def _bind_schedule(cls: type[BusinessCase], schedule: Any) -> Schedule:
    """A schedule declared on ``cls``: it starts ``cls``, with input that ``cls`` accepts (checked now)."""
    where = f"case {cls.__name__}"
    if not isinstance(schedule, Schedule):
        raise CaseDefinitionError(f"{where}: schedules must hold Schedule(...) objects, got {schedule!r}")
    try:
        data = cls.validate_input(schedule.input).model_dump(mode="json")
    except InvalidInputError as exc:
        raise CaseDefinitionError(f"{where}: schedule {schedule.name!r} has {exc.message}") from None
    return dataclasses.replace(schedule, case=cls.name, input=data)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _collect_stages(cls: type[BusinessCase]) -> tuple[StageSpec, ...]:
    """Stages of the bases first, then this class's, each in definition order; overrides keep their place."""
    functions: dict[str, StageFunction] = {}
    options: dict[str, StageOptions] = {}
    origin: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            marked = getattr(value, _STAGE_MARK, None)
            if not isinstance(marked, StageOptions):
                continue
            stage_name = marked.name or attr
            if stage_name in functions and origin[stage_name] != attr:
                raise CaseDefinitionError(
                    f"case {cls.__name__}: two stages are named {stage_name!r} "
                    f"({origin[stage_name]} and {attr})",
                    hint="give each stage a unique name with @stage(name=...)",
                    case=cls.__name__,
                )
            functions[stage_name] = value
            options[stage_name] = marked
            origin[stage_name] = attr
    return tuple(
        StageSpec(
            name=name, index=i, function=fn, retry=options[name].retry or cls.retry,
            timeout_s=options[name].timeout_s,
            reply_timeout_s=options[name].reply_timeout_s or cls.reply_timeout_s,
            on_failed=options[name].on_failed, optional=options[name].optional,
        )
        for i, (name, fn) in enumerate(functions.items())
    )


def _validate_case(cls: type[BusinessCase]) -> None:
    where = f"case {cls.__name__}"
    if not isinstance(cls.name, str) or not _NAME_PATTERN.match(cls.name):
        raise CaseDefinitionError(
            f"{where}: name {cls.name!r} is not a valid case name",
            hint="use lowercase letters, digits and underscores, starting with a letter (e.g. 'order')",
        )
    if not isinstance(cls.version, int) or isinstance(cls.version, bool) or cls.version < 1:
        raise CaseDefinitionError(f"{where}: version must be an int >= 1, got {cls.version!r}")
    if not (isinstance(cls.Input, type) and issubclass(cls.Input, BaseModel)):
        raise CaseDefinitionError(
            f"{where}: Input must be a pydantic BaseModel subclass",
            hint="define `class Input(BaseModel): ...` inside the case",
        )
    if not cls.stages:
        raise CaseDefinitionError(
            f"{where} has no stages",
            hint="mark async methods with @stage, or declare a base class with `abstract=True`",
        )
    names = [spec.name for spec in cls.stages]
    for spec in cls.stages:
        if not _NAME_PATTERN.match(spec.name):
            raise CaseDefinitionError(
                f"{where}: stage name {spec.name!r} is not valid",
                hint="use lowercase letters, digits and underscores, starting with a letter",
            )
        if not inspect.iscoroutinefunction(spec.function):
            raise CaseDefinitionError(
                f"{where}: stage {spec.name!r} must be a coroutine function",
                hint=f"write `async def {spec.function.__name__}(self, ctx):`",
            )
        _validate_failure_options(where, spec, names)
        for method, target in literal_targets(spec.function):
            if method in _CHECKED_TARGETS and target not in names:
                close = difflib.get_close_matches(target, names, n=1)
                suggestion = f"did you mean {close[0]!r}? " if close else ""
                raise CaseDefinitionError(
                    f"{where}: stage {spec.name!r} goes to unknown stage {target!r}",
                    hint=f"{suggestion}known stages: {', '.join(names)}",
                )


def _validate_failure_options(where: str, spec: StageSpec, names: list[str]) -> None:
    if not isinstance(spec.retry, Retry):
        raise CaseDefinitionError(f"{where}: stage {spec.name!r} retry must be a Retry(...)")
    for option in ("timeout_s", "reply_timeout_s"):
        value = getattr(spec, option)
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise CaseDefinitionError(f"{where}: stage {spec.name!r} {option} must be a positive number of seconds")
    if spec.on_failed is not None:
        if spec.on_failed not in names or spec.on_failed == spec.name:
            close = difflib.get_close_matches(spec.on_failed, names, n=1)
            raise CaseDefinitionError(
                f"{where}: stage {spec.name!r} has on_failed={spec.on_failed!r}, which is not another stage",
                hint=(f"did you mean {close[0]!r}? " if close else "") + f"known stages: {', '.join(names)}",
            )
        if spec.optional:
            raise CaseDefinitionError(
                f"{where}: stage {spec.name!r} is both optional and has on_failed",
                hint="choose one: optional=True goes on to the next stage, on_failed goes to a named stage",
            )


# What each context method names its target stage with, when the stage's source names it literally.
TARGET_KEYWORDS = {"next": "stage", "call": "resume", "wait": "then", "wait_for": "resume", "fan_out": "resume"}
_CHECKED_TARGETS = frozenset({"next", "call", "wait"})  # checked at definition; the others at run time


def literal_targets(function: StageFunction) -> list[tuple[str, str]]:
    """(method, stage) for each literal target in a stage's source, in source order: ``next(stage="x")``,
    ``call(..., resume="x")``, ``wait(..., then="x")``, ``wait_for(..., resume="x")``, ``fan_out(..., resume="x")``.

    Targets computed at run time cannot be read here; the engine checks them when the stage runs.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return []  # source not available (e.g. defined in a REPL): checked at run time instead
    targets = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        keyword = TARGET_KEYWORDS.get(node.func.attr)
        for kw in node.keywords:
            if kw.arg == keyword and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                targets.append((node.func.attr, kw.value.value))
    return targets
