"""Blueprints with ``schedules``: checked on load like code schedules, fired through the ordinary scheduler,
and the lead-sync example (cron-started fetch, one write per lead) on the in-memory harness.

The proof on RabbitMQ + PostgreSQL with worker subprocesses is in tests/test_lead_sync_cluster.py.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from business_cases.crm_api import MALFORMED, CrmApi
from business_cases.lead_services import SETUP_SQL, write_lead
from framework import FakeClock, ProcessFilter, Status
from framework.blueprint import BlueprintError, load_blueprint
from framework.cli import cli
from framework.testing import run_cases

LEAD_SYNC = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints" / "lead_sync.yaml"
HOUR = 3600

REPORT: dict[str, Any] = {
    "name": "report",
    "version": 1,
    "input": {"kind": {"type": "string", "enum": ["daily", "hourly"]}},
    "schedules": [
        {"name": "hourly-report", "every_s": HOUR, "input": {"kind": "hourly"}, "missed": "catch_up",
         "max_catch_up": 2},
        {"name": "daily-report", "cron": "0 6 * * *", "timezone": "Europe/Berlin", "input": {"kind": "daily"}},
    ],
    "steps": [{"name": "done", "kind": "complete", "result": {"kind": "${input.kind}"}}],
}


def with_schedule(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(REPORT)
    data["schedules"][0].update(changes)
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(data)
    return raised.value.errors


async def _processes(env: Any, case: str) -> list[Any]:
    return [await env.get(pid) for pid in await env.flow.store.find_ids(ProcessFilter(case=case))]


def test_schedules_compile_into_the_case_like_code_schedules() -> None:
    case = load_blueprint(REPORT)
    hourly, daily = case.schedules
    assert (hourly.name, hourly.case, hourly.input, hourly.missed, hourly.max_catch_up) == (
        "hourly-report", "report", {"kind": "hourly"}, "catch_up", 2)
    assert daily.timing.describe() == "cron '0 6 * * *' in Europe/Berlin" and daily.missed == "skip"


def test_bad_schedules_are_refused_naming_the_schedule_and_field() -> None:
    assert errors_of(with_schedule(cron="61 * * * *")) == [
        "schedules[0] 'hourly-report': takes only one of 'cron' or 'every_s'"]
    no_interval = with_schedule()
    del no_interval["schedules"][0]["every_s"]
    no_interval["schedules"][0]["cron"] = "61 * * * *"
    assert errors_of(no_interval) == [
        "schedules[0] 'hourly-report': invalid cron expression '61 * * * *': Bad minute (five fields: minute hour "
        "day-of-month month day-of-week, e.g. '*/5 * * * *'; or six with seconds first, e.g. '*/10 * * * * *')"]
    assert errors_of(with_schedule(timezone="UTC")) == [
        "schedules[0] 'hourly-report': timezone applies to cron schedules only (intervals tick at multiples of "
        "every_s since the epoch, in UTC)"]
    berlin = copy.deepcopy(REPORT)
    berlin["schedules"][1]["timezone"] = "Europe/Berlim"
    assert errors_of(berlin) == [
        "schedules[1] 'daily-report': unknown time zone 'Europe/Berlim' "
        "(use an IANA name such as 'Europe/Berlin' or 'UTC')"]
    assert errors_of(with_schedule(input={"kind": "weekly", "extra": 1})) == [
        "schedules[0] 'hourly-report'.input.kind: Input should be 'daily' or 'hourly'",
        "schedules[0] 'hourly-report'.input.extra: Extra inputs are not permitted"]
    assert errors_of(with_schedule(name="daily-report")) == [
        "schedules[1] 'daily-report'.name: duplicate schedule name (also schedules[0])"]
    assert errors_of(with_schedule(name="Hourly Report", every_s=0)) == [
        "schedules[0] 'Hourly Report'.every_s: 0 is less than the minimum of 1",
        "schedules[0] 'Hourly Report'.name: 'Hourly Report' does not match ^[a-z0-9][a-z0-9_.-]{0,99}$"]


def test_the_cli_lists_a_blueprints_schedules_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(REPORT))
    bad.write_text(yaml.safe_dump(with_schedule(input={"kind": "weekly"})))
    result = CliRunner().invoke(cli, ["blueprint", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert (f"{good}: ok, report v1: done; schedule 'hourly-report': every 3600 s; schedule 'daily-report': "
            "cron '0 6 * * *' in Europe/Berlin") in result.stdout
    assert "schedules[0] 'hourly-report'.input.kind: Input should be 'daily' or 'hourly'" in result.stderr


async def test_a_blueprint_schedule_fires_one_process_per_tick() -> None:
    case = load_blueprint(REPORT)
    clock = FakeClock(datetime.fromisoformat("2024-05-01T10:30:00+00:00").timestamp())
    async with run_cases([case], clock=clock) as env:
        await env.advance(3 * HOUR)  # 11:00, 12:00, 13:00 passed unseen: catch_up fires the newest 2
        docs = await _processes(env, "report")
        assert sorted(d.client_key for d in docs) == [
            "schedule:hourly-report:2024-05-01T12:00:00+00:00", "schedule:hourly-report:2024-05-01T13:00:00+00:00"]
        assert all(d.status is Status.COMPLETED and d.result == {"kind": "hourly"} for d in docs)
        listed = {s["name"]: s for s in await env.flow.schedules.list()}
        assert listed["daily-report"]["case"] == "report"
        assert listed["daily-report"]["next_fire_at"] == "2024-05-02T04:00:00+00:00"  # 06:00 in Berlin (CEST)


async def test_lead_sync_blueprint_fires_in_office_hours_and_writes_each_lead_once() -> None:
    crm = CrmApi(count=25)

    async def crm_export(command, tx):  # type: ignore[no-untyped-def] - the `http` service, faked
        assert command.payload["params"] == {"segment": "b2b"}
        body = {"export_id": f"EXP-{crm.exports}", "leads": [*crm.valid_leads().values(), *MALFORMED]}
        crm.exports += 1
        return {"status": 200, "headers": {}, "body": body}

    case = load_blueprint(LEAD_SYNC, constants={"crm_api": "http://crm.test"})
    friday_evening = datetime.fromisoformat("2024-05-10T19:40:00+02:00").timestamp()
    async with run_cases([case], clock=FakeClock(friday_evening), service_setup_sql=SETUP_SQL,
                         services={"http": crm_export, "lead_writer": write_lead}) as env:
        await env.advance(10 * 60)  # 19:50: the 19:45 tick, the last of the day, has fired
        crm.add_leads(3)
        await env.advance(48 * HOUR)  # to Sunday 19:50: no tick on the weekend
        assert len(await _processes(env, "lead_sync")) == 1
        # Monday 08:05, as if the workers had just come up: 07:00 .. 08:00 are due, `missed: skip` fires 08:00.
        await env.advance(12 * HOUR + 15 * 60)
        docs = sorted(await _processes(env, "lead_sync"), key=lambda d: d.client_key)
        async with env.inbox.transaction() as tx:
            writes = await tx.fetch("SELECT export_id, lead_id, count(*) AS n FROM lead_writes GROUP BY 1, 2")
            leads = await tx.fetchval("SELECT count(*) FROM leads")
    assert [d.client_key for d in docs] == ["schedule:lead-sync:2024-05-10T17:45:00+00:00",
                                            "schedule:lead-sync:2024-05-13T06:00:00+00:00"]
    assert [d.result for d in docs] == [
        {"export_id": "EXP-0", "fetched": 27, "written": 25, "rejected": [25, 26]},
        {"export_id": "EXP-1", "fetched": 30, "written": 28, "rejected": [28, 29]},
    ]
    assert {w["n"] for w in writes} == {1} and len(writes) == 25 + 28
    assert leads == 28
