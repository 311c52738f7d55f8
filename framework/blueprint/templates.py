"""Workflow templates: predefined blueprints with declared parameters, from which new workflows are made.

A template is a blueprint file with a ``template:`` section: a description and ``parameters`` in the same
field vocabulary as a blueprint's ``input`` (``{type, default, min, max, pattern, enum, ...}``). Making a
workflow from it (``render``) validates the values against those declarations, then fills them in:

* a parameter named like one of the blueprint's ``constants`` sets that constant, which steps read as
  ``${const.NAME}`` in their expressions (URLs, bodies, conditions): values are never pasted into expression
  text, so a value cannot change what an expression does;
* ``"{{ NAME }}"`` as a whole string value (a number where the format allows no expression, such as an
  approval's ``deadline_s``) becomes the parameter's typed value;
* ``{{ NAME }}`` inside a longer string (a cron field) takes only integer parameters, for the same reason.

The result is an ordinary blueprint, checked by the same loader as any file before it is returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from framework.blueprint.compiler import compile_blueprint
from framework.blueprint.fields import model_from_fields
from framework.blueprint.loader import BlueprintError, blueprint_schema, read_blueprint
from framework.errors import InvalidInputError, UnknownTemplateError

_WHOLE = re.compile(r"^\{\{\s*([a-z][a-z0-9_]*)\s*\}\}$")
_INSIDE = re.compile(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    parameters: dict[str, dict[str, Any]]  # field specs, as a blueprint's ``input``
    blueprint: dict[str, Any]  # the blueprint, placeholders and all, without the ``template`` section
    source: str

    def describe(self) -> dict[str, Any]:
        """What ``GET /templates/{name}`` and ``stageflow template show`` print."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "blueprint": self.blueprint}

    def render(self, values: Mapping[str, Any], *, name: str | None = None, version: int = 1) -> dict[str, Any]:
        """The blueprint of a new workflow made from this template; ``InvalidInputError`` lists every value
        that does not fit its parameter (nothing is made then)."""
        if name is not None and not _NAME.match(name):
            raise InvalidInputError(f"workflow name {name!r} is not valid", errors=[{
                "field": "name", "message": "lowercase letters, digits and underscores, starting with a letter"}])
        model = model_from_fields(f"{self.name}_parameters", self.parameters, extra="forbid")
        try:
            filled = model.model_validate(dict(values), strict=True).model_dump(mode="json")
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in err["loc"]) or "(parameters)",
                       "message": "not a parameter of this template" if err["type"] == "extra_forbidden"
                       else err["msg"]} for err in exc.errors(include_url=False)]
            shown = ", ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidInputError(f"parameters do not fit template {self.name!r}: {shown}", errors=errors,
                                    hint=f"stageflow template show {self.name} lists them") from None
        blueprint: dict[str, Any] = _fill(self.blueprint, filled)
        constants = blueprint.get("constants") or {}
        blueprint["constants"] = {**constants, **{k: v for k, v in filled.items() if k in constants}}
        blueprint["name"] = name or self.name
        blueprint["version"] = version
        compile_blueprint(blueprint)  # the same checks as any blueprint file: a template cannot make a bad one
        return blueprint


def _fill(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if whole := _WHOLE.match(value):
            return params[whole.group(1)]
        return _INSIDE.sub(lambda m: str(params[m.group(1)]), value)
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    return value


def _placeholders(value: Any) -> Iterator[tuple[str, bool]]:
    """``(parameter name, used as a whole value)`` for every placeholder in ``value``."""
    if isinstance(value, str):
        if whole := _WHOLE.match(value):
            yield whole.group(1), True
        else:
            yield from ((m.group(1), False) for m in _INSIDE.finditer(value))
    elif isinstance(value, list):
        for item in value:
            yield from _placeholders(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _placeholders(item)


def parse_template(data: Mapping[str, Any], source: str) -> Template:
    """A template from a blueprint mapping with a ``template`` section; ``BlueprintError`` lists what is wrong."""
    section = data.get("template")
    if not isinstance(section, Mapping):
        raise BlueprintError(f"{source} is not a template", errors=["a template needs a `template:` section"],
                             source=source)
    blueprint = {k: v for k, v in data.items() if k != "template"}
    parameters = section.get("parameters") or {}
    errors: list[str] = []
    if not isinstance(parameters, Mapping) or not all(isinstance(s, Mapping) for s in parameters.values()):
        raise BlueprintError(f"template {source} is not valid",
                             errors=["template.parameters: a mapping of name -> field spec"], source=source)
    # Parameters use the vocabulary of a blueprint's input, plus a description for people.
    specs = {k: {f: v for f, v in spec.items() if f != "description"} for k, spec in parameters.items()}
    field_schema = {"$defs": blueprint_schema()["$defs"], "$ref": "#/$defs/fields"}
    errors += [f"template.parameters.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
               for e in jsonschema.Draft202012Validator(field_schema).iter_errors(specs)]
    constants = blueprint.get("constants") or {}
    used = set(constants) & set(specs)
    for param, whole in _placeholders(blueprint):
        if param not in specs:
            errors.append(f"placeholder {{{{ {param} }}}} names no declared parameter")
        elif not whole and specs[param].get("type") != "integer":
            errors.append(f"placeholder {{{{ {param} }}}} inside a string takes integer parameters only "
                          f"(pass text through a constant read as ${{const.{param}}})")
        used.add(param)
    errors += [f"template.parameters.{p}: used by no constant or placeholder" for p in sorted(set(specs) - used)]
    if errors:
        raise BlueprintError(f"template {source} is not valid", errors=errors, source=source)
    name = str(blueprint.get("name", Path(source).stem))
    template = Template(name, str(section.get("description", "")), {k: dict(v) for k, v in parameters.items()},
                        blueprint, source)
    return template


class TemplateLibrary:
    """The templates Stageflow ships (``framework/blueprint/templates/``) plus those in extra folders."""

    def __init__(self, folders: tuple[str | Path, ...] = ()) -> None:
        self._folders = folders
        self._templates: dict[str, Template] | None = None

    def _load(self) -> dict[str, Template]:
        if self._templates is None:
            found: dict[str, Template] = {}
            shipped = resources.files("framework.blueprint").joinpath("templates")
            for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
                if entry.name.endswith((".yaml", ".yml")):
                    template = parse_template(yaml.safe_load(entry.read_text()), f"templates/{entry.name}")
                    found[template.name] = template
            for folder in self._folders:
                for path in sorted(Path(folder).glob("*.y*ml")):
                    data, source = read_blueprint(path)
                    template = parse_template(data, source)
                    found[template.name] = template  # a deployment's own template wins over a shipped one
            self._templates = found
        return self._templates

    def names(self) -> list[str]:
        return sorted(self._load())

    def __iter__(self) -> Iterator[Template]:
        return iter(self._load()[name] for name in self.names())

    def get(self, name: str) -> Template:
        try:
            return self._load()[name]
        except KeyError:
            raise UnknownTemplateError(f"unknown template {name!r}",
                                   hint="templates: " + ", ".join(self.names())) from None
