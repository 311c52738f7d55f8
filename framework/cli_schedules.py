"""``stageflow schedules list|pause|resume``: the schedules in the store (declared on cases and blueprints)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from framework.errors import StageflowError
from framework.settings import Settings


@click.group()
def schedules() -> None:
    """List, pause and resume schedules (declared on cases: `schedules = [Schedule(...)]`)."""


async def _schedules(action: str, *args: str) -> Any:
    from framework.app import Stageflow

    async with Stageflow.from_settings(Settings()) as flow:
        return await getattr(flow.schedules, action)(*args)


def _schedule_line(item: dict[str, Any]) -> str:
    state = "paused" if item["paused"] else "active"
    return (f"{item['name']}  {item['case']}  {state}  {item['schedule']}  missed={item['missed']}  "
            f"next={item['next_fire_at']}  last={item['last_tick'] or '-'}")


@schedules.command("list")
def list_schedules() -> None:
    """One line per schedule: name, case, state, timing, missed-tick policy, next and last tick (UTC)."""
    items = _run_schedules("list")
    for item in items:
        click.echo(_schedule_line(item))
    if not items:
        click.echo("no schedules (workers write them when they start)", err=True)


@schedules.command("pause")
@click.argument("name")
def pause_schedule(name: str) -> None:
    """Stop firing schedule NAME."""
    click.echo(_schedule_line(_run_schedules("pause", name)))


@schedules.command("resume")
@click.argument("name")
def resume_schedule(name: str) -> None:
    """Fire schedule NAME again from its next tick (ticks during the pause are not fired)."""
    click.echo(_schedule_line(_run_schedules("resume", name)))


def _run_schedules(action: str, *args: str) -> Any:
    try:
        return asyncio.run(_schedules(action, *args))
    except StageflowError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2)
