"""API definitions: an API declared once (method, url template, request mapping, headers with secret references,
response fields to keep, timeout, retry, allowed hosts) and named by ``api_call`` steps with ``api: NAME``.

Definitions come from a blueprint's own ``apis:`` section, or from shared files (``STAGEFLOW_BLUEPRINT_APIS``,
each ``{apis: {NAME: definition}}``) that every blueprint of a deployment may use; a name defined in both is an
error, so nobody wonders which one runs. On load each step that names an API is *expanded* into an ordinary
inline ``request`` (the definition, then the step's overrides: ``params``, ``headers`` and an object ``body``
merged, the rest replaced; the step's ``keep`` or else the API's, likewise ``retry``), so the rest of the loader,
the compiler and the worker treat it like any other ``api_call``: the worker renders it when the step runs, and
the command carries the concrete method, URL and body and the header secrets as *references*.

Checked here, every problem named by file, step and field: unknown API names, definitions with bad templates
or a URL that does not start with ``http(s)://`` or a ``${...}`` base, bad host patterns, and a mapping that
reads ``input.X`` the input does not declare, ``store.X`` no earlier step (in file order) keeps, or
``const.X`` the blueprint does not declare.
"""

from __future__ import annotations

import copy
import difflib
import glob
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from framework.blueprint.expressions import BASE_ROOTS, ExpressionError, Expressions, template_parts
from framework.blueprint.loader import BlueprintError, blueprint_schema, location, read_blueprint, schema_problems
from framework.errors import ConfigurationError
from framework.http.policy import check_host_patterns

_MERGED = ("params", "headers")
_REQUEST_FIELDS = ("method", "url", "params", "headers", "body", "timeout_s", "ok_statuses", "allowed_hosts")


@dataclass(frozen=True, slots=True)
class ApiDefinition:
    name: str
    spec: dict[str, Any]
    origin: str  # the file (or blueprint) that defines it, for messages


def load_api_files(
    patterns: Iterable[str], *, functions: Mapping[str, Callable[..., Any]] | None = None
) -> dict[str, ApiDefinition]:
    """The shared API definitions of files or globs (JSON or YAML, ``{apis: {NAME: definition}}``); ``functions``
    as for blueprints (the templates may call them)."""
    expressions = Expressions(functions)
    found: dict[str, ApiDefinition] = {}
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise ConfigurationError(f"no API file matches {pattern!r}", hint="check STAGEFLOW_BLUEPRINT_APIS")
        for path in paths:
            data, origin = read_blueprint(Path(path))
            errors = [f"{origin}: {location(list(e.absolute_path), data)}: {e.message}"
                      for e in jsonschema.Draft202012Validator(_file_schema()).iter_errors(data)]
            for name, spec in (data.get("apis") or {}).items() if not errors else ():
                if name in found:
                    errors.append(f"{origin}: apis.{name}: also defined in {found[name].origin}")
                errors += _definition_errors(name, spec, origin, expressions)
                found[name] = ApiDefinition(name, spec, origin)
            if errors:
                raise BlueprintError(f"API file {origin!r} is invalid", errors=errors, source=origin)
    return found


def expand_apis(
    data: dict[str, Any], origin: str, shared: Mapping[str, ApiDefinition], expressions: Expressions
) -> dict[str, Any]:
    """``data`` with every ``api: NAME`` step expanded into an inline request; ``BlueprintError`` listing every
    problem. A blueprint with schema problems is returned as it is: the loader reports those."""
    if schema_problems(data):
        return data
    errors: list[str] = []
    broken: set[str] = set()
    apis = dict(shared)
    for name, spec in (data.get("apis") or {}).items():
        if name in shared:
            errors.append(f"{origin}: apis.{name}: also defined in {shared[name].origin}; rename one")
        problems = list(_definition_errors(name, spec, origin, expressions))
        broken |= {name} if problems else set()
        errors += problems
        apis[name] = ApiDefinition(name, spec, origin)
    expanded = copy.deepcopy(data)
    reported: set[tuple[str, str]] = set()  # a definition's own problem is named once, at the first step that meets it
    kept: set[str] = set()  # what the steps so far keep in the store
    for index, step in enumerate(expanded["steps"]):
        if step["kind"] == "api_call" and "api" in step:
            where = location(["steps", index], data)
            api = apis.get(step["api"])
            if api is None:
                close = difflib.get_close_matches(step["api"], list(apis), n=1)
                known = f"; defined: {', '.join(sorted(apis))}" if apis else "; no API is defined (apis:)"
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"{origin}: {where}.api: unknown api {step['api']!r}{hint}{known}")
            elif api.name not in broken:
                expanded["steps"][index] = step = _merged(step, api.spec)
                for root, message in _reference_errors(step, data, kept, expressions):
                    if (api.name, message) not in reported:  # store keys depend on the step: always named
                        errors.append(f"{origin}: {where} (api {api.name!r}).{message}")
                        reported |= {(api.name, message)} if root != "store" else set()
        kept |= _keeps(step)
    if errors:
        raise BlueprintError(f"blueprint {data.get('name', '?')!r} ({origin}) is invalid", errors=errors, source=origin)
    return expanded


def _merged(step: dict[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The step as an inline ``api_call``: the definition, then the step's overrides."""
    overrides = step.get("request") or {}
    request = {key: copy.deepcopy(spec[key]) for key in _REQUEST_FIELDS if key in spec}
    for key, value in overrides.items():
        if key in _MERGED or (key == "body" and isinstance(value, dict) and isinstance(request.get("body"), dict)):
            request[key] = {**request.get(key, {}), **value}
        else:
            request[key] = value
    merged = {k: v for k, v in step.items() if k not in ("api", "request", "keep")}
    merged["request"] = request
    keep = step.get("keep", spec.get("keep"))  # a step that says what it keeps says all of it
    if keep:
        merged["keep"] = keep
    if "retry" not in step and "retry" in spec:
        merged["retry"] = spec["retry"]
    return merged


def _definition_errors(name: str, spec: Mapping[str, Any], origin: str, expressions: Expressions) -> Iterator[str]:
    where = f"{origin}: apis.{name}"
    try:
        first, is_expression = template_parts(spec["url"])[0]
    except ExpressionError as exc:
        yield f"{where}.url: {exc.message}"
        return
    if not is_expression and not first.startswith(("http://", "https://")):
        yield f"{where}.url: {spec['url']!r} must start with http:// or https://, or with a ${{...}} base URL"
    request = {k: spec[k] for k in ("url", "params", "headers", "body") if k in spec}
    for path, message in expressions.template_errors(request, roots=BASE_ROOTS):
        yield f"{where}.{path}: {message}"
    for key, expression in (spec.get("keep") or {}).items():
        try:
            expressions.compile(expression, roots=BASE_ROOTS | {"reply"})
        except ExpressionError as exc:
            yield f"{where}.keep.{key}: {exc.message}"
    try:
        check_host_patterns(spec.get("allowed_hosts") or (), f"{where}.allowed_hosts")
    except ConfigurationError as exc:
        yield exc.message


def _reference_errors(
    step: Mapping[str, Any], data: Mapping[str, Any], kept: set[str], expressions: Expressions
) -> Iterator[tuple[str, str]]:
    """(root, message) for each read of data nothing provides: an undeclared input or constant, a store key no
    earlier step keeps."""
    request = {k: v for k, v in step["request"].items() if k in ("url", "params", "headers", "body")}
    available = {"input": set(data.get("input") or {}), "store": kept, "const": set(data.get("constants") or {})}
    what = {"input": "the input does not declare", "store": "no earlier step keeps",
            "const": "the blueprint's constants do not declare"}
    try:
        reads = list(expressions.template_reads(request))
    except ExpressionError as exc:  # a bad override
        yield "request", f"request: {exc.message}"
        return
    for path, root, key in reads:
        if root in available and key is not None and key not in available[root]:
            close = difflib.get_close_matches(key, sorted(available[root]), n=1)
            hint = f" (did you mean {root}.{close[0]}?)" if close else ""
            yield root, f"{path}: reads {root}.{key}, which {what[root]}{hint}"


def _keeps(step: Mapping[str, Any]) -> set[str]:
    """The store keys a step writes (any kind that has ``keep``, ``set`` or ``into``; an approval its name)."""
    names = set(step.get("keep") or {}) | set(step.get("set") or {})
    if "into" in step:
        names |= {step["into"], f"{step['into']}_rejected"}
    if step.get("kind") == "approval":
        names.add(step["name"])
    return names


@cache
def _file_schema() -> dict[str, Any]:
    return {
        "$defs": blueprint_schema()["$defs"], "type": "object", "required": ["apis"], "additionalProperties": False,
        "properties": {"description": {"type": "string"}, "apis": {"$ref": "#/$defs/apis"}},
    }
