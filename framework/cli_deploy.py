"""``stageflow deploy status`` and ``stageflow deploy check``: what a blue-green deploy needs to know.

``status``: live processes per (case, version, stage, waiting kind), the running releases (the worker registry)
with the (case, version) pairs each carries, and per release whether it may stop. ``check``: the gate before a
deploy; exits 1 naming every (case, version, stage) that live processes may be resumed at and the release
configured here (``STAGEFLOW_CASES``, ``STAGEFLOW_BLUEPRINTS``, ``STAGEFLOW_RELEASE``) lacks.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson

from framework.settings import Settings


@click.group()
def deploy() -> None:
    """Before and during a deploy: which release may stop, and whether this one can take over."""


@deploy.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(as_json: bool) -> None:
    """Live processes by case, version, stage and wait; running releases, what each carries, and whether it may
    stop (every (case, version) with live processes is carried by another running release)."""
    from framework.cli import _run
    from framework.deploy import processes_text, releases, uncarried
    from framework.wiring import store_from_settings

    async def main() -> tuple[Any, Any]:
        async with store_from_settings(Settings()) as store:
            return await store.live_stages(), await store.running_workers(time.time())

    live, workers = _run(main())
    running, orphans = releases(workers, live), uncarried(workers, live)
    if as_json:
        click.echo(orjson.dumps({
            "live": [{"case": g.case, "version": g.version, "stage": g.stage, "waiting": g.waiting,
                      "processes": g.processes} for g in live],
            "releases": [{"release": r.name, "workers": r.workers, "carries": r.carries, "may_stop": r.may_stop,
                          "verdict": r.verdict(), "only_it_carries": [
                              {"case": c, "version": v, "processes": n} for (c, v), n in r.sole]} for r in running],
            "uncarried": [{"case": c, "version": v, "processes": n} for (c, v), n in orphans],
        }, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"live processes: {sum(g.processes for g in live)}")
    for g in live:
        click.echo(f"  {g.case} v{g.version}  {g.stage or '-'}  {g.waiting or 'running'}  {g.processes}")
    click.echo(f"running releases: {len(running)}")
    for r in running:
        carries = ", ".join(f"{c} v{v}" for c, v in r.carries)
        click.echo(f"  {r.name}  workers={len(r.workers)}  carries {carries}")
        click.echo(f"    {r.verdict()}")
    for (case, version), n in orphans:
        click.secho(f"no running release carries {case} v{version} ({processes_text(n)})", fg="yellow")


@deploy.command("check")
def check() -> None:
    """The pre-deploy gate: exit 1 naming each (case, version, stage) live processes may be resumed at that the
    release configured here lacks (a version it does not register, or a stage that version does not have)."""
    from framework.cli import _exit_with, _run
    from framework.deploy import live_by_version, missing, refused_processes
    from framework.errors import StageflowError
    from framework.heartbeat import default_release
    from framework.registry import CaseRegistry
    from framework.wiring import cases_from_settings, store_from_settings

    settings = Settings()
    try:  # the cases and blueprints this release's workers would load
        registry = CaseRegistry(cases_from_settings(settings))
    except StageflowError as exc:
        _exit_with(exc)
        return
    release = settings.release or default_release(registry.carried())

    async def main() -> Any:
        from framework.clock import SystemClock
        from framework.wiring import workflows_from_settings

        async with store_from_settings(settings) as store:
            # stored workflows belong to no release: every release registers them from the store
            await workflows_from_settings(settings, store, registry, clock=SystemClock()).refresh()
            return await store.live_reach()

    live = _run(main())
    lacking = missing(registry, live)
    for m in lacking:
        click.secho(f"missing: {m.describe()}", fg="red")
    total, versions = sum(g.processes for g in live), len(live_by_version(live))
    if lacking:
        click.echo(f"refused: release {release} lacks {len(lacking)} (case, version, stage) that "
                   f"{refused_processes(registry, live)} of {total} live processes can be resumed at")
        sys.exit(1)
    click.echo(f"ok: release {release} carries every stage that {total} live processes "
               f"({versions} case version{'' if versions == 1 else 's'}) can be resumed at")
