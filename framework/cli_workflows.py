"""``stageflow workflow ...`` (stored workflows: create, update, validate, activate, deactivate, list, show) and
``stageflow template ...`` (the templates new workflows are made from)."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import orjson
import yaml

from framework.blueprint.loader import read_blueprint
from framework.blueprint.templates import TemplateLibrary
from framework.errors import InvalidInputError, StageflowError
from framework.settings import Settings

if TYPE_CHECKING:
    from framework.workflows import Workflows

T = TypeVar("T")


def _library() -> TemplateLibrary:
    return TemplateLibrary(tuple(Settings().blueprint_templates))


def _fail(exc: StageflowError) -> NoReturn:
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
@click.option("--save", is_flag=True, help="store it as a workflow (version 1, active): running workers pick it up")
@click.option("--by", default=None, help="who makes it (with --save; default: your user name)")
def create_from_template(name: str, workflow: str | None, pairs: tuple[str, ...], output: Path | None,
                         save: bool, by: str | None) -> None:
    """Make a new workflow (a checked blueprint) from template NAME with --param values."""
    try:
        blueprint = _library().get(name).render(_parse_params(pairs), name=workflow)
    except StageflowError as exc:
        _fail(exc)
    if save:
        saved = _with_workflows(lambda w: w.create(blueprint, by=by or _user()))
        click.echo(f"workflow {saved['name']!r} version {saved['version']} saved (active)")
        return
    text = (orjson.dumps(blueprint, option=orjson.OPT_INDENT_2).decode() + "\n" if output and output.suffix == ".json"
            else yaml.safe_dump(blueprint, sort_keys=False))
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(f"wrote {output} (workflow {blueprint['name']!r}); run it with STAGEFLOW_BLUEPRINTS={output}", err=True)


# -- stored workflows --------------------------------------------------------------------------------------------

def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container: the change is still recorded
        return "cli"


def _with_workflows(action: Callable[[Workflows], Awaitable[T]]) -> T:
    """Run ``action`` on the store's workflows (the deployment's cases loaded, so names cannot clash)."""
    from framework.app import Stageflow

    async def main() -> T:
        async with Stageflow.from_settings(Settings().model_copy(update={"workflow_refresh_s": 0})) as flow:
            return await action(flow.workflows)

    try:
        return asyncio.run(main())
    except StageflowError as exc:
        _fail(exc)


def _definition(path: str) -> dict[str, Any]:
    try:
        data, _ = read_blueprint(path)
    except StageflowError as exc:
        _fail(exc)
    return data


def _print(view: dict[str, Any]) -> None:
    click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())


@click.group("workflow")
def workflow_group() -> None:
    """Stored workflows: blueprints changed at run time, versioned, picked up by running workers."""


@workflow_group.command("list")
def list_workflows() -> None:
    """Every stored workflow: name, newest version, active or not, last changed by whom, when."""
    rows = _with_workflows(lambda w: w.summaries())
    for row in rows:
        state = "active" if row["active"] else "inactive"
        click.echo(f"{row['name']}  v{row['latest']}  {state}  changed {row['updated_at']} by {row['updated_by']}")
    if not rows:
        click.echo("no stored workflows (`stageflow workflow create FILE` saves one)", err=True)


@workflow_group.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version's blueprint (default: the newest)")
def show_workflow(name: str, version: int | None) -> None:
    """Workflow NAME as JSON: its versions (who saved each, when) and a version's blueprint."""
    _print(_with_workflows(lambda w: w.get(name, version)))


@workflow_group.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def validate_workflow(file: str) -> None:
    """Check blueprint FILE as a workflow, saving nothing; exit 1 listing every problem."""
    definition = _definition(file)

    async def check(workflows: Workflows) -> dict[str, Any]:
        return workflows.validate(definition)

    result = _with_workflows(check)
    if result["valid"]:
        click.echo(f"{file}: ok")
        return
    for error in result["errors"]:
        click.echo(f"{file}: {error['field']}: {error['message']}", err=True)
    sys.exit(1)


@workflow_group.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--by", default=None, help="who makes it (default: your user name)")
def create_workflow(file: str, by: str | None) -> None:
    """Store blueprint FILE as a new workflow (version 1, active)."""
    saved = _with_workflows(lambda w: w.create(_definition(file), by=by or _user()))
    click.echo(f"workflow {saved['name']!r} version {saved['version']} saved (active)")


@workflow_group.command("update")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--by", default=None, help="who changes it (default: your user name)")
def update_workflow(name: str, file: str, by: str | None) -> None:
    """Store FILE as the next version of workflow NAME: new processes start on it, running ones keep theirs."""
    saved = _with_workflows(lambda w: w.update(name, _definition(file), by=by or _user()))
    click.echo(f"workflow {name!r} version {saved['version']} saved")


@workflow_group.command("activate")
@click.argument("name")
@click.option("--by", default=None, help="who changes it (default: your user name)")
def activate_workflow(name: str, by: str | None) -> None:
    """Let new processes start on workflow NAME again."""
    _with_workflows(lambda w: w.set_active(name, True, by=by or _user()))
    click.echo(f"workflow {name!r} active")


@workflow_group.command("deactivate")
@click.argument("name")
@click.option("--by", default=None, help="who changes it (default: your user name)")
def deactivate_workflow(name: str, by: str | None) -> None:
    """Stop new processes of workflow NAME (running ones go on)."""
    _with_workflows(lambda w: w.set_active(name, False, by=by or _user()))
    click.echo(f"workflow {name!r} inactive: it starts no new processes")
