"""``stageflow stats``: the statistics table of every case over the last hour, from the store."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click
import orjson

from framework.errors import StageflowError
from framework.settings import Settings


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
def stats_command(as_json: bool) -> None:
    """Per case, last hour: completed, failed, pace per minute, duration p50/p95/p99, stuck, failures by stage."""
    from framework.statistics import read_statistics, table
    from framework.wiring import store_from_settings

    async def main() -> dict[str, Any]:
        settings = Settings()
        async with store_from_settings(settings) as store:
            return await read_statistics(store, time.time(), stuck_after_s=settings.stats_stuck_after_s)

    try:
        statistics = asyncio.run(main())
    except StageflowError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        sys.exit(2)
    if as_json:
        click.echo(orjson.dumps(statistics, option=orjson.OPT_INDENT_2).decode())
        return
    for line in table(statistics):
        click.echo(line)
    if not statistics["cases"]:
        click.echo("no process finished or got stuck in the last hour", err=True)
