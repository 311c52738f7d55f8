"""Reading and checking blueprints: the published JSON Schema, then what a schema cannot say.

Every problem is reported at once, each naming the step and field it is about::

    steps[2] 'create_job'.request.body.date: expression 'input.dat' reads ... (did you mean 'input'?)

The checks beyond the schema: duplicate step names, references to unknown or later steps (``depends_on``,
``goto``, ``default``, ``next``, ``on_failed``), expression syntax and the data each expression may read,
the shapes that levels of parallel steps allow, and schedules (cron syntax, time zone, unique names, an
input the blueprint accepts).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import BaseModel, ValidationError

from framework.blueprint.expressions import BASE_ROOTS, ExpressionError, Expressions
from framework.blueprint.fields import model_from_fields
from framework.blueprint.step_kinds import STEP_KINDS, CheckContext, check_step_kinds
from framework.errors import CaseDefinitionError, ConfigurationError
from framework.schedules import Schedule

SINGLE_COMMAND_KINDS = frozenset({"api_call", "call"})
_REPLY_ROOTS = BASE_ROOTS | {"reply"}
_ITEM_ROOTS = BASE_ROOTS | {"item"}
_EVENT_ROOTS = BASE_ROOTS | {"event"}
EVENT_KINDS = frozenset({"wait_for_event", "approval"})


class BlueprintError(CaseDefinitionError):
    """A blueprint that cannot be loaded; ``errors`` lists every problem, each with its step and field."""

    def __init__(self, message: str, *, errors: list[str], source: str | None = None) -> None:
        shown = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{message}:\n{shown}" if errors else message, source=source)
        self.errors = errors


@cache
def blueprint_schema() -> dict[str, Any]:
    """The published JSON Schema of blueprints (``framework/blueprint/schema.json``)."""
    schema: dict[str, Any] = json.loads(resources.files("framework.blueprint").joinpath("schema.json").read_text())
    return schema


def read_blueprint(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The blueprint as a dict and a name for messages; files are JSON (``.json``) or YAML."""
    if isinstance(source, Mapping):
        return dict(source), f"blueprint {source.get('name', '?')!r}"
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BlueprintError(f"cannot read blueprint {str(path)!r}: {exc.strerror or exc}", errors=[]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BlueprintError(f"blueprint {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}",
                             errors=[" ".join(str(exc).split())]) from None
    if not isinstance(data, dict):
        raise BlueprintError(f"blueprint {str(path)!r} must be an object (a mapping) at the top", errors=[])
    return data, str(path)


@dataclass
class Level:
    """Steps that run together: one step, or several independent ones as one fan-out."""

    stage: str
    steps: list[dict[str, Any]]

    @property
    def parallel(self) -> bool:
        return len(self.steps) > 1


@dataclass
class CheckedBlueprint:
    data: dict[str, Any]
    levels: list[Level]
    stage_of: dict[str, str] = field(default_factory=dict)  # step name -> stage that runs it


def check_blueprint(
    data: dict[str, Any], expressions: Expressions, *, connections: frozenset[str] | None = None
) -> CheckedBlueprint:
    """Validate ``data``; raise ``BlueprintError`` listing every problem found. ``connections``: the
    ``db_query`` connection names the deployment has (None: not known here, not checked)."""
    errors = schema_problems(data)
    if errors:  # the deeper checks assume the schema's shapes
        raise BlueprintError(f"blueprint {data.get('name', '?')!r} is invalid", errors=errors)
    errors += list(_check_names(data))
    errors += list(_check_schedules(data))
    reference_errors = bool(errors)
    errors += list(_check_expressions(data, expressions))
    errors += list(check_step_kinds(data, CheckContext(data, lambda path: location(path, data), connections)))
    if reference_errors:  # levels follow the references: with broken ones they would only add noise
        raise BlueprintError(f"blueprint {data.get('name', '?')!r} is invalid", errors=errors)
    levels = _levels(data["steps"], errors)
    checked = CheckedBlueprint(data, levels, {s["name"]: level.stage for level in levels for s in level.steps})
    errors += list(_check_flow(checked))
    if errors:
        raise BlueprintError(f"blueprint {data.get('name', '?')!r} is invalid", errors=errors)
    return checked


# -- the schema ---------------------------------------------------------------------------------------------


def schema_problems(data: dict[str, Any]) -> list[str]:
    """What the published schema finds wrong with ``data``, one message per problem."""
    return [_schema_message(error, data) for error in _schema_errors(data)]


def _schema_errors(data: dict[str, Any]) -> list[jsonschema.ValidationError]:
    validator = jsonschema.Draft202012Validator(blueprint_schema())
    found = [e for e in validator.iter_errors(data) if e.validator != "unevaluatedProperties"]
    for index, step in enumerate(data.get("steps") or []):
        found += _unknown_step_fields(step, index)
    return sorted(found, key=lambda e: [str(p) for p in e.absolute_path])


def _unknown_step_fields(step: Any, index: int) -> list[jsonschema.ValidationError]:
    """Fields a step of its kind does not have (clearer than the schema's "unevaluated properties")."""
    defs = blueprint_schema()["$defs"]["step"]
    if not isinstance(step, dict) or step.get("kind") not in defs["properties"]["kind"]["enum"]:
        return []
    allowed = set(defs["properties"])
    for rule in defs["allOf"]:
        if rule["if"]["properties"]["kind"]["const"] == step["kind"]:
            allowed |= set(rule["then"].get("properties", {}))
    problems = []
    for key in sorted(set(step) - allowed):
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(jsonschema.ValidationError(
            f"a {step['kind']} step has no field {key!r}{hint}", path=["steps", index, key]))
    return problems


def _schema_message(error: jsonschema.ValidationError, data: dict[str, Any]) -> str:
    message = error.message
    schema = error.schema if isinstance(error.schema, Mapping) else {}  # a schema may be just true or false
    alternatives = [r["required"][0] for r in schema.get(str(error.validator)) or () if isinstance(r, dict)
                    and len(r.get("required") or ()) == 1] if error.validator in ("oneOf", "anyOf") else []
    if error.validator == "oneOf" and not error.context and alternatives:  # valid under more than one
        message = f"takes only one of {' or '.join(repr(a) for a in alternatives)}"
    elif error.validator in ("oneOf", "anyOf") and error.context:
        required = [c.message.split("'")[1] for c in error.context if c.validator == "required"]
        if len(required) == len(error.context):
            message = f"needs {' or '.join(repr(r) for r in dict.fromkeys(required))}"
        else:
            message = jsonschema.exceptions.best_match(error.context).message
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, allowed, n=1)) else "")
                 for k in unknown]
        message = f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; allowed: {', '.join(allowed)}"
    elif error.validator == "pattern":
        message = f"{error.instance!r} does not match {schema['pattern']}"
        if schema["pattern"] == blueprint_schema()["$defs"]["name"]["pattern"]:
            message += " (lowercase letters, digits, underscores)"
    return f"{location(list(error.absolute_path), data)}: {message}"


def location(path: list[Any], data: Mapping[str, Any]) -> str:
    """``steps[2] 'create_job'.request.body`` for a path into the blueprint (a schedule is named likewise)."""
    out = ""
    for position, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
            named = data.get(path[0]) if position == 1 and path[0] in ("steps", "schedules") else None
            if isinstance(named, list) and part < len(named):
                name = named[part].get("name") if isinstance(named[part], dict) else None
                out += f" {name!r}" if isinstance(name, str) else ""
        else:
            out += f".{part}" if out else str(part)
    return out or "(blueprint)"


# -- names and references ----------------------------------------------------------------------------------


def _check_names(data: dict[str, Any]) -> Iterator[str]:
    steps = data["steps"]
    seen: dict[str, int] = {}
    for index, step in enumerate(steps):
        name = step["name"]
        if name in seen:
            yield f"{location(['steps', index, 'name'], data)}: duplicate step name (also steps[{seen[name]}])"
        seen.setdefault(name, index)
    for name in data.get("input") or {}:
        if name.startswith("model_") or hasattr(BaseModel, name):
            yield f"input.{name}: this name is reserved (it clashes with the input model's own attributes)"
    for index, step in enumerate(steps):
        for key in ("on_failed", "next", "default", "on_reject", "on_expiry"):
            yield from _reference(data, seen, [index, key], step.get(key))
        for b, branch in enumerate(step.get("branches") or []):
            yield from _reference(data, seen, [index, "branches", b, "goto"], branch["goto"])
        for d, dep in enumerate(step.get("depends_on") or []):
            if dep in seen and seen[dep] >= index:
                yield f"{location(['steps', index, 'depends_on', d], data)}: {dep!r} is not an earlier step"
            else:
                yield from _reference(data, seen, [index, "depends_on", d], dep)
        if step.get("on_invalid") == "drop" and "into" not in step:
            yield f"{location(['steps', index], data)}: on_invalid 'drop' needs 'into' (where the valid items go)"
        if step.get("on_failed") == step["name"]:
            yield f"{location(['steps', index, 'on_failed'], data)}: a step cannot be its own on_failed path"
        if step.get("on_failed") and step.get("optional"):
            yield (f"{location(['steps', index], data)}: both optional and on_failed; choose one (optional goes "
                   "on to the next step, on_failed goes to a named step)")


def _reference(data: dict[str, Any], seen: dict[str, int], path: list[Any], target: Any) -> Iterator[str]:
    if target is None or target in seen:
        return
    close = difflib.get_close_matches(target, list(seen), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    yield f"{location(['steps', *path], data)}: unknown step {target!r}{hint}"


# -- schedules ---------------------------------------------------------------------------------------------


def _check_schedules(data: dict[str, Any]) -> Iterator[str]:
    """What ``Schedule`` itself refuses (cron syntax, time zone), duplicate names, and input the blueprint's
    own ``input`` would refuse when the schedule fires."""
    specs = data.get("schedules") or []
    if not specs:
        return
    input_model = model_from_fields("ScheduleInput", data.get("input") or {}, extra="forbid")
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        where = ["schedules", index]
        if spec["name"] in seen:
            yield f"{location([*where, 'name'], data)}: duplicate schedule name (also schedules[{seen[spec['name']]}])"
        seen.setdefault(spec["name"], index)
        try:
            Schedule(**spec)
        except ConfigurationError as exc:
            prefix = f"schedule {spec['name']!r}"  # the location names it already
            message = exc.message.removeprefix(f"{prefix}: ").removeprefix(f"{prefix} ")
            yield f"{location(where, data)}: {message}" + (f" ({exc.hint})" if exc.hint else "")
        try:
            input_model.model_validate(spec.get("input") or {})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                yield f"{location([*where, 'input', *err['loc']], data)}: {err['msg']}"


# -- expressions -------------------------------------------------------------------------------------------


def _expression_fields(step: dict[str, Any]) -> Iterator[tuple[list[Any], Any, frozenset[str], bool]]:
    """(path, value, data it may read, is a template) for every expression a step holds."""
    kind = step["kind"]
    after_reply = _REPLY_ROOTS if kind in SINGLE_COMMAND_KINDS or kind in STEP_KINDS \
        else _EVENT_ROOTS if kind in EVENT_KINDS else BASE_ROOTS | {"fan_in"}
    for key, value in (step.get("keep") or {}).items():
        yield ["keep", key], value, after_reply, False
    if kind == "api_call":
        yield ["request"], _templates_of(step["request"]), BASE_ROOTS, True
    elif kind == "call":
        yield ["payload"], step.get("payload"), BASE_ROOTS, True
    elif kind == "wait":
        for key in ("seconds", "until"):
            if isinstance(step.get(key), str):
                yield [key], step[key], BASE_ROOTS, True
    elif kind == "approval" and "assignee" in step:
        yield ["assignee"], step["assignee"], BASE_ROOTS, True
    elif kind == "transform":
        for key, value in (step.get("set") or {}).items():
            yield ["set", key], value, BASE_ROOTS, False
        if "from" in step:
            yield ["from"], step["from"], BASE_ROOTS, False
        if "where" in step:
            yield ["where"], step["where"], _ITEM_ROOTS, False
        for key, value in (step.get("map") or {}).items():
            yield ["map", key], value, _ITEM_ROOTS, False
    elif kind == "validate":
        yield ["target"], step["target"], BASE_ROOTS, False
    elif kind == "condition":
        for b, branch in enumerate(step["branches"]):
            yield ["branches", b, "if"], branch["if"], BASE_ROOTS, False
    elif kind == "fan_out":
        yield ["items"], step["items"], BASE_ROOTS, False
        if "request" in step:
            yield ["request"], _templates_of(step["request"]), _ITEM_ROOTS, True
        for key in ("call", "case"):
            if key in step:
                yield [key], step[key], _ITEM_ROOTS, True
    elif kind in STEP_KINDS:
        yield from STEP_KINDS[kind].expression_fields(step)
    elif kind == "complete":
        yield ["result"], step.get("result"), BASE_ROOTS, True
    elif kind == "fail":
        yield ["reason"], step["reason"], BASE_ROOTS, True


def _templates_of(request: dict[str, Any]) -> dict[str, Any]:
    """The parts of a request that are templates (a secret reference is not)."""
    return {k: v for k, v in request.items() if k not in ("method", "timeout_s", "ok_statuses")}


def _check_expressions(data: dict[str, Any], expressions: Expressions) -> Iterator[str]:
    def check(path: list[Any], value: Any, roots: frozenset[str], template: bool) -> Iterator[str]:
        if template:
            for inner, message in expressions.template_errors(value, roots=roots):
                yield f"{location([*path, *_split_path(inner)], data)}: {message}"
            return
        try:
            expressions.compile(value, roots=roots)
        except ExpressionError as exc:
            yield f"{location(path, data)}: {exc.message}"

    if "result" in data:
        yield from check(["result"], data["result"], BASE_ROOTS, True)
    for index, step in enumerate(data["steps"]):
        for path, value, roots, template in _expression_fields(step):
            yield from check(["steps", index, *path], value, roots, template)


def _split_path(path: str) -> list[Any]:
    parts: list[Any] = []
    for piece in path.replace("]", "").split("."):
        name, *indices = piece.split("[")
        if name:
            parts.append(name)
        parts += [int(i) for i in indices]
    return parts


# -- levels and flow ---------------------------------------------------------------------------------------


def _levels(steps: list[dict[str, Any]], errors: list[str]) -> list[Level]:
    """Group steps level by level: a step's level is one more than the deepest step it depends on (by
    default the step before it), so independent steps share a level and run together."""
    level_of: dict[str, int] = {}
    for index, step in enumerate(steps):
        deps = step["depends_on"] if "depends_on" in step else ([steps[index - 1]["name"]] if index else [])
        level_of[step["name"]] = 1 + max((level_of.get(d, -1) for d in deps), default=-1)
    by_level: dict[int, list[dict[str, Any]]] = {}
    for step in steps:
        by_level.setdefault(level_of[step["name"]], []).append(step)
    levels = []
    names = {s["name"] for s in steps}
    for number in sorted(by_level):
        members = by_level[number]
        stage = members[0]["name"] if len(members) == 1 else f"parallel_{members[0]['name']}"[:63]
        if len(members) > 1 and stage in names:
            errors.append(f"steps: the parallel level of {members[0]['name']!r} would be named {stage!r}, "
                          "which is a step's name; rename that step")
        levels.append(Level(stage, members))
    return levels


def _check_flow(checked: CheckedBlueprint) -> Iterator[str]:
    data = checked.data
    index_of = {s["name"]: i for i, s in enumerate(data["steps"])}
    grouped = {s["name"] for level in checked.levels if level.parallel for s in level.steps}
    for level in checked.levels:
        if not level.parallel:
            continue
        for step in level.steps:
            where = location(["steps", index_of[step["name"]]], data)
            if step["kind"] not in SINGLE_COMMAND_KINDS:
                together = ", ".join(repr(s["name"]) for s in level.steps)
                yield (f"{where}: runs in parallel with {together}, but only api_call and call steps can run in "
                       "parallel; add depends_on to put it on a level of its own")
            for key in ("on_failed", "next", "on_reject", "on_expiry"):
                if key in step:
                    yield f"{where}.{key}: not allowed on a step that runs in parallel (it joins with the others)"
    for index, step in enumerate(data["steps"]):
        targets: list[tuple[list[str | int], Any]] = [
            (["on_failed"], step.get("on_failed")), (["next"], step.get("next")), (["default"], step.get("default")),
            (["on_reject"], step.get("on_reject")), (["on_expiry"], step.get("on_expiry"))]
        targets += [(["branches", b, "goto"], br["goto"]) for b, br in enumerate(step.get("branches") or [])]
        for path, target in targets:
            if target in grouped:
                yield (f"{location(['steps', index, *path], data)}: {target!r} runs in parallel with other steps; "
                       "only a step on a level of its own can be jumped to")
    last = checked.levels[-1].steps[-1] if checked.levels else None
    if last is not None and last["kind"] == "wait" and "next" not in last:
        where = location(["steps", index_of[last["name"]]], data)
        yield f"{where}: a wait cannot be the last step (nothing to wait for)"
