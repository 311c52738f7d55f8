"""``stageflow template list|show|create``: the workflow templates, and new blueprints made from them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
import yaml

from framework.blueprint.templates import TemplateLibrary
from framework.errors import InvalidInputError, StageflowError
from framework.settings import Settings


def _library() -> TemplateLibrary:
    return TemplateLibrary(tuple(Settings().blueprint_templates))


def _fail(exc: StageflowError) -> None:
    click.secho(f"error: {exc.message}", fg="red", err=True)
    if isinstance(exc, InvalidInputError):
        for error in exc.errors:
            click.echo(f"  {error['field']}: {error['message']}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(2)


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; a value is read as YAML (``20`` an integer, ``true`` a boolean), so types need no flags."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--param")
        try:
            values[key] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            values[key] = text
    return values


@click.group("template")
def template_group() -> None:
    """Workflow templates: predefined blueprints with parameters (STAGEFLOW_BLUEPRINT_TEMPLATES adds folders)."""


@template_group.command("list")
def list_templates() -> None:
    """The templates, one per line: name and description."""
    try:
        templates = list(_library())
    except StageflowError as exc:
        _fail(exc)
    width = max((len(t.name) for t in templates), default=0)
    for template in templates:
        click.echo(f"{template.name:<{width}}  {template.description}")


@template_group.command("show")
@click.argument("name")
def show_template(name: str) -> None:
    """Template NAME's parameters (type, default, description) and its blueprint."""
    try:
        template = _library().get(name)
    except StageflowError as exc:
        _fail(exc)
    click.echo(f"{template.name}: {template.description}\nparameters:")
    for param, spec in template.parameters.items():
        default = f" (default {spec['default']!r})" if "default" in spec else " (required)"
        click.echo(f"  {param}: {spec.get('type', 'any')}{default}  {spec.get('description', '')}".rstrip())
    click.echo("blueprint:")
    click.echo(yaml.safe_dump(template.blueprint, sort_keys=False), nl=False)


@template_group.command("create")
@click.argument("name")
@click.option("--name", "workflow", default=None, help="the new workflow's (case's) name (default: the template's)")
@click.option("--param", "pairs", multiple=True, metavar="NAME=VALUE", help="a parameter's value (repeatable)")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the blueprint to this file (YAML, or JSON for .json) instead of printing it")
def create_from_template(name: str, workflow: str | None, pairs: tuple[str, ...], output: Path | None) -> None:
    """Make a new workflow (a checked blueprint) from template NAME with --param values."""
    try:
        blueprint = _library().get(name).render(_parse_params(pairs), name=workflow)
    except StageflowError as exc:
        _fail(exc)
    text = (orjson.dumps(blueprint, option=orjson.OPT_INDENT_2).decode() + "\n" if output and output.suffix == ".json"
            else yaml.safe_dump(blueprint, sort_keys=False))
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(f"wrote {output} (workflow {blueprint['name']!r}); run it with STAGEFLOW_BLUEPRINTS={output}", err=True)
