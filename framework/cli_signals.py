"""``stageflow event`` and ``stageflow lookup``: deliver an event to a process, find a process by client key."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import orjson

from framework.settings import Settings


@click.command()
@click.argument("name")
@click.option("--process", "process_id", default=None, help="the process id")
@click.option("--case", default=None, help="with --key: the process of this case started with that client key")
@click.option("--key", "client_key", default=None, help="the client key the process was started with")
@click.option("--data", "data_json", default="null", help="the event's data as JSON")
@click.option("--event-id", default=None, help="the same id twice changes nothing the second time")
def event(name: str, process_id: str | None, case: str | None, client_key: str | None, data_json: str,
          event_id: str | None) -> None:
    """Deliver the event NAME to a process (--process ID, or --case C --key K): it resumes its wait_for(NAME), or
    is kept for a later one. Prints what became of it as JSON."""
    from framework.cli import _json_option, _run

    if (process_id is None) == (case is None or client_key is None):
        raise click.UsageError("name the process: --process ID, or --case CASE --key CLIENT_KEY")
    data = _json_option(data_json, "--data")

    async def main() -> Any:
        from framework.app import Stageflow

        async with Stageflow.from_settings(Settings()) as flow:
            if process_id is not None:
                return await flow.send_event(process_id, name, data, event_id=event_id)
            return await flow.signals.send_by_key(case or "", client_key or "", name, data, event_id=event_id)

    click.echo(orjson.dumps(dataclasses.asdict(_run(main()))).decode())


@click.command()
@click.argument("case")
@click.argument("client_key")
def lookup(case: str, client_key: str) -> None:
    """Show the process of CASE started with CLIENT_KEY (its document and history, as JSON)."""
    from framework.cli import _run

    async def main() -> dict[str, Any]:
        from framework.app import Stageflow

        async with Stageflow.from_settings(Settings()) as flow:
            doc = await flow.get_by_key(case, client_key)
            view = doc.public_view()
            view["history"] = await flow.store.history(doc.process_id)
        return view

    click.echo(orjson.dumps(_run(main()), option=orjson.OPT_INDENT_2).decode())
