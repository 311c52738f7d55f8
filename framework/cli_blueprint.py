"""``stageflow blueprint validate``: check blueprint files and print every problem."""

from __future__ import annotations

import sys

import click

from framework.errors import StageflowError
from framework.settings import Settings


@click.group()
def blueprint() -> None:
    """Check blueprints (processes written as JSON or YAML)."""


@blueprint.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate_blueprint(files: tuple[str, ...]) -> None:
    """Check blueprint FILES against the schema and their references; exit 1 listing every problem."""
    from framework.blueprint import BlueprintError, load_api_files, load_blueprint, load_functions
    from framework.dbquery import known_connections

    settings = Settings()
    try:  # the shared API files (STAGEFLOW_BLUEPRINT_APIS) are checked first: the blueprints may use them
        functions = load_functions(settings.blueprint_functions)
        apis = load_api_files(settings.blueprint_apis, functions=functions)
    except BlueprintError as exc:
        click.secho(exc.message.splitlines()[0], fg="red", err=True)
        for error in exc.errors:
            click.echo(f"  {error}", err=True)
        sys.exit(1)
    except StageflowError as exc:
        from framework.cli import _exit_with

        _exit_with(exc)
        return
    failed = False
    for path in files:
        try:
            case = load_blueprint(path, functions=functions, apis=apis, connections=known_connections())
        except BlueprintError as exc:
            failed = True
            click.secho(f"{path}: {exc.message.splitlines()[0]}", fg="red", err=True)
            for error in exc.errors:
                click.echo(f"  {error}", err=True)
            continue
        except StageflowError as exc:
            failed = True
            click.secho(f"{path}: {exc}", fg="red", err=True)
            continue
        schedules = "".join(f"; schedule {s.name!r}: {s.timing.describe()}" for s in case.schedules)
        click.echo(f"{path}: ok, {case.name} v{case.version}: {' -> '.join(s.name for s in case.stages)}{schedules}")
    if failed:
        sys.exit(1)
