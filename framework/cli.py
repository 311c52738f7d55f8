"""The ``stageflow`` command: run workers, services and the demo; start and inspect processes.

Every command reads ``STAGEFLOW_*`` settings. Errors print what went wrong and what to do, never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import click
import orjson
import pydantic

from framework.cli_blueprint import blueprint
from framework.cli_deploy import deploy
from framework.cli_schedules import schedules
from framework.cli_services import SERVICE_COMMANDS
from framework.cli_signals import event, lookup
from framework.cli_stats import stats_command
from framework.cli_workflows import template_group, workflow_group
from framework.errors import StageflowError
from framework.loops import loop_factory
from framework.settings import Settings


def _exit_with(exc: StageflowError) -> None:
    click.secho(f"error: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(2)


def _run(coro: Coroutine[Any, Any, Any], *, event_loop: str = "asyncio") -> Any:
    try:
        with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
            return runner.run(coro)
    except StageflowError as exc:
        _exit_with(exc)
    except KeyboardInterrupt:
        sys.exit(130)


@click.group()
def cli() -> None:
    """Stageflow: long-running business processes as ordered stages on RabbitMQ."""
    from framework.logs import configure_logging

    # One-shot commands print results on stdout; logs go to stderr, quiet unless something is wrong.
    # Long-running commands (worker, services) configure logging again from their settings.
    configure_logging("WARNING")


@cli.command()
def worker() -> None:
    """Run a worker until SIGTERM (STAGEFLOW_BROKER_URL, STAGEFLOW_STORE_URL, STAGEFLOW_CASES...)."""
    from framework.hosting import run_worker

    settings = Settings()
    _run(run_worker(settings), event_loop=settings.event_loop)


@cli.command("http-adapter")
def http_adapter() -> None:
    """Run only the `http` service (API calls) until SIGTERM; workers then set STAGEFLOW_HTTP_ADAPTER=false."""
    from framework.http.process import run_http_adapter

    settings = Settings()
    _run(run_http_adapter(settings), event_loop=settings.event_loop)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def gateway(host: str, port: int) -> None:
    """Serve the HTTP API (STAGEFLOW_API_KEYS_READ / STAGEFLOW_API_KEYS_OPERATE, or STAGEFLOW_GATEWAY_INSECURE=true)."""
    import uvicorn

    # The gateway is an app on top of the library, not part of it: imported here, when it is asked for, so
    # that importing framework/ never imports it (tests/test_layering.py).
    from gateway.app import create_app

    try:
        app = create_app()
    except StageflowError as exc:
        _exit_with(exc)
        return
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command()
@click.option("-n", "--processes", "count", default=200, show_default=True, help="orders to run")
@click.option("-w", "--workers", default=2, show_default=True,
              help="in-process workers (embedded broker only; with RabbitMQ run `stageflow worker`)")
@click.option("--blueprints", is_flag=True,
              help="run the blueprint examples (orders, a product import, cron-started lead syncs) against local "
              "stand-in APIs")
def demo(count: int, workers: int, blueprints: bool) -> None:
    """Run the e-commerce order demo: embedded by default, or on RabbitMQ + PostgreSQL if configured."""
    # The demo is the examples' (business_cases): imported only here, and it passes its cases explicitly.
    if blueprints:
        from business_cases.blueprint_demo import run_blueprint_demo

        _run(run_blueprint_demo(Settings(), count=count, workers=workers))
        return
    from business_cases.demo import run_demo

    _run(run_demo(Settings(), count=count, workers=workers))


@cli.command()
@click.argument("case")
@click.option("--input", "input_json", default="{}", help="the process input as JSON")
@click.option("--client-key", default=None, help="idempotency key: the same key never starts two processes")
def start(case: str, input_json: str, client_key: str | None) -> None:
    """Start a process of CASE."""
    try:
        data = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--input") from None

    async def main() -> None:
        from framework.app import Stageflow

        async with Stageflow.from_settings(Settings()) as flow:
            doc = await flow.start(case, data, client_key=client_key)
        click.echo(doc.process_id)

    _run(main())


@cli.command()
@click.argument("process_id")
def show(process_id: str) -> None:
    """Show a process document and its history as JSON."""

    async def main() -> None:
        from framework.app import Stageflow

        async with Stageflow.from_settings(Settings()) as flow:
            doc, history = await flow.get_with_history(process_id)
            view = doc.public_view()
            view["history"] = history
        click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())

    _run(main())


@cli.command("list")
@click.option("--case", default=None, help="only this case")
@click.option("--status", default=None,
              type=click.Choice(["running", "waiting", "retrying", "completed", "failed", "cancelled"]),
              help="only this status (retrying: waiting to try a stage or call again)")
@click.option("--failed-stage", default=None, help="only processes that failed at this stage")
@click.option("--search", multiple=True, help="name=value: a search attribute of --case (repeatable)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_processes(case: str | None, status: str | None, failed_stage: str | None, search: tuple[str, ...],
                   limit: int) -> None:
    """List processes, newest first: id, case, status, stage, progress, created (UTC)."""
    from datetime import UTC, datetime

    from framework.search import parse_filters
    from framework.store.base import ProcessFilter

    async def main() -> list[tuple[dict[str, Any], int, int]]:
        from framework.app import Stageflow

        async with Stageflow.from_settings(Settings()) as flow:
            declared = flow.engine.cases.latest(case).search_attributes if case and search else {}
            where = ProcessFilter(case=case, status=status, failed_stage=failed_stage,
                                  search=parse_filters(declared, search, case=case))
            items: list[dict[str, Any]] = []
            after = None
            while len(items) < limit:
                want = min(500, limit - len(items))
                page, after = await flow.store.list_page(where, after=after, limit=want)
                items.extend(page)
                if len(page) < want or after is None:
                    break
            rows = []
            for item in items:
                try:
                    names = [s.name for s in flow.engine.cases.get(item["case"], item["case_version"]).stages]
                except StageflowError:  # a case this process's workers know but this command does not
                    names = []
                done = len(names) if item["status"] == "completed" else (
                    names.index(item["stage"]) if item["stage"] in names else 0)
                rows.append((item, done, len(names)))
        return rows

    rows = _run(main())
    for item, done, total in rows:
        created = datetime.fromtimestamp(item["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{item['process_id']}  {item['case']}  {item['status']:<9}  {item['stage'] or '-'}  "
                   f"{done}/{total}  {created}")
    if not rows:
        click.echo("no process matches", err=True)


def _json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None


async def _operate(action: str, **kwargs: Any) -> Any:
    from framework.app import Stageflow

    async with Stageflow.from_settings(Settings()) as flow:
        return await getattr(flow.operations, action)(**kwargs)


@cli.command()
@click.argument("process_id")
@click.option("--reason", default="cancelled by an operator", show_default=True)
def cancel(process_id: str, reason: str) -> None:
    """Cancel a process that has not finished."""
    doc = _run(_operate("cancel", process_id=process_id, reason=reason))
    click.echo(f"{doc.process_id} {doc.status.value}")


@cli.command()
@click.argument("process_id")
@click.option("--from-stage", default=None, help="restart here instead of at the failed stage")
@click.option("--input", "input_json", default=None, help="corrected input as JSON (validated)")
def retry(process_id: str, from_stage: str | None, input_json: str | None) -> None:
    """Run a failed (or cancelled) process again from its failed stage, or from --from-stage."""
    data = _json_option(input_json, "--input")
    doc = _run(_operate("retry", process_id=process_id, from_stage=from_stage, input=data))
    click.echo(f"{doc.process_id} {doc.status.value} at {doc.stage}")


@cli.command()
@click.option("--case", default=None)
@click.option("--status", default="failed", show_default=True, type=click.Choice(["failed", "cancelled"]))
@click.option("--failed-stage", default=None)
@click.option("--created-after", type=click.DateTime(), default=None, help="UTC")
@click.option("--created-before", type=click.DateTime(), default=None, help="UTC")
@click.option("--from-stage", default=None, help="restart every match here instead of at its failed stage")
@click.option("--resume", "resume_id", default=None, metavar="JOB_ID",
              help="go on with an interrupted job (its own filter) instead of starting one")
def reprocess(case: str | None, status: str, failed_stage: str | None, created_after: Any, created_before: Any,
              from_stage: str | None, resume_id: str | None) -> None:
    """Retry every process matching the filter, as a recorded job (the gateway's GET /jobs shows it too),
    showing progress. Ctrl-C leaves it interrupted; --resume JOB_ID goes on after the last process it handled."""
    from datetime import UTC

    from framework.store.base import Job, ProcessFilter

    def epoch(value: Any) -> float | None:
        return value.replace(tzinfo=UTC).timestamp() if value is not None else None

    where = ProcessFilter(case=case, status=status, failed_stage=failed_stage,
                          created_after=epoch(created_after), created_before=epoch(created_before))

    def progress(job: Job) -> None:
        of = f"/{job.total} ({100 * (job.done + job.failed) // job.total} %)" if job.total else ""
        click.echo(f"{job.job_id}: {job.done + job.failed}{of} handled, {job.done} retried, {job.failed} not", err=True)

    async def main() -> Job:
        from framework.app import Stageflow
        from framework.jobs import Jobs

        async with Stageflow.from_settings(Settings()) as flow:
            jobs = Jobs(flow.operations, name="cli")
            if resume_id:
                job = await jobs.claim(resume_id)
            else:
                job = await jobs.create_reprocess(where, from_stage=from_stage)
            click.echo(f"{job.job_id}: started", err=True)
            return await jobs.run(job, progress=progress)

    job = _run(main())
    for error in job.errors:
        click.echo(f"not retried: {error['process_id']}: {error['reason']}", err=True)
    click.echo(json.dumps({"job_id": job.job_id, "status": job.status, "total": job.total, "retried": job.done,
                           "skipped": job.failed, "error": job.error}))
    if job.status != "completed":
        sys.exit(1)


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
def jobs(limit: int) -> None:
    """List the newest background jobs (bulk reprocess) with their progress."""

    async def main() -> list[Any]:
        from framework.app import Stageflow
        from framework.jobs import Jobs

        async with Stageflow.from_settings(Settings()) as flow:
            return await Jobs(flow.operations, name="cli").recent(limit=limit)

    for job in _run(main()):
        total = "?" if job.total is None else job.total
        click.echo(f"{job.job_id}  {job.kind}  {job.status:<11}  {job.done + job.failed}/{total}  "
                   f"retried {job.done}  not {job.failed}  {job.error or ''}".rstrip())


@cli.command()
def cases() -> None:
    """List the registered cases (STAGEFLOW_CASES) with their versions and stages."""
    from framework.registry import CaseRegistry
    from framework.wiring import cases_from_settings

    try:
        registry = CaseRegistry(cases_from_settings(Settings()))
    except StageflowError as exc:
        _exit_with(exc)
        return
    for case in registry:
        click.echo(f"{case.name} v{case.version}: {' -> '.join(s.name for s in case.stages)}")


# the commands of their own modules
for command in (event, lookup, stats_command, deploy, schedules, blueprint, template_group, workflow_group,
                *SERVICE_COMMANDS):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="stageflow")
    except pydantic.ValidationError as exc:  # a STAGEFLOW_* setting that does not parse: say which, no traceback
        for error in exc.errors(include_url=False):
            where = "STAGEFLOW_" + "_".join(str(p) for p in error["loc"]).upper() + ": " if error["loc"] else ""
            click.secho(f"error: {where}{error['msg']}", fg="red", err=True)
        click.echo("hint: fix the environment variable (see README, Configuration)", err=True)
        sys.exit(2)
