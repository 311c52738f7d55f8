"""Schedules without a server: declaration checks, cron ticks in time zones across DST, missed-tick policies
through the harness, pause/resume, sync of changed definitions, and the CLI on SQLite."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from framework import (
    BusinessCase,
    CaseDefinitionError,
    ConfigurationError,
    FakeClock,
    ProcessFilter,
    Schedule,
    ScheduleNotFoundError,
    Settings,
    Stageflow,
    stage,
)
from framework.cli import cli
from framework.scheduler import Scheduler, collect_schedules
from framework.store.sqlite import SqliteStore
from framework.testing import run_cases

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600


def berlin(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, BERLIN).isoformat()


class Report(BusinessCase):
    class Input(BaseModel):
        kind: str

    schedules = [
        Schedule("hourly-skip", every_s=HOUR, input={"kind": "skip"}),
        Schedule("hourly-catch-up", every_s=HOUR, input={"kind": "catch_up"}, missed="catch_up", max_catch_up=3),
    ]

    @stage
    async def go(self, ctx):  # type: ignore[no-untyped-def]
        ctx.complete(ctx.input.kind)


# -- declaring -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of cron"),
        ({"cron": "* * * * *", "every_s": 5}, "exactly one of cron"),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * * *"}, "invalid cron expression"),
        ({"cron": "0 0 30 2 *"}, "invalid cron expression"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Nowhere"}, "unknown time zone 'Europe/Nowhere'"),
        ({"every_s": 0.5}, "every_s must be a whole number of seconds, at least 1"),
        ({"every_s": 60, "timezone": "UTC"}, "timezone applies to cron schedules only"),
        ({"every_s": 60, "missed": "later"}, "missed='later'"),
        ({"every_s": 60, "max_catch_up": 0}, "max_catch_up must be an int from 1 to 1000"),
    ],
)
def test_a_bad_schedule_fails_where_it_is_declared(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("*", r"\*").replace("(", r"\(")):
        Schedule("nightly", **options)


def test_a_bad_name_or_input_fails_when_the_case_is_defined() -> None:
    with pytest.raises(ConfigurationError, match="schedule name 'Nightly Import' is not valid"):
        Schedule("Nightly Import", every_s=60)
    with pytest.raises(CaseDefinitionError, match="schedule 'bad' has invalid input for case 'needs_kind': kind"):

        class NeedsKind(BusinessCase):
            class Input(BaseModel):
                kind: str

            schedules = [Schedule("bad", every_s=60, input={"sort": "x"})]

            @stage
            async def go(self, ctx):  # type: ignore[no-untyped-def]
                ctx.complete(None)

    assert Report.schedules[0].case == "report" and Report.schedules[0].input == {"kind": "skip"}


def test_two_schedules_with_one_name_are_refused() -> None:
    class Other(BusinessCase):
        schedules = [Schedule("hourly-skip", every_s=60)]

        @stage
        async def go(self, ctx):  # type: ignore[no-untyped-def]
            ctx.complete(None)

    with pytest.raises(ConfigurationError, match="two schedules are named 'hourly-skip'"):
        collect_schedules([Report, Other])


# -- when ticks fall -------------------------------------------------------------------------------------


def test_cron_ticks_in_a_time_zone_across_both_dst_changes() -> None:
    daily = Schedule("daily", cron="30 2 * * *", timezone="Europe/Berlin").timing
    # Spring forward (2024-03-31 02:00 -> 03:00): 02:30 does not exist, it fires once at 03:00 local.
    ticks = daily.due_ticks(berlin(2024, 3, 30, 0), berlin(2024, 4, 1, 12), 10)
    assert [local(t) for t in ticks] == [
        "2024-03-30T02:30:00+01:00", "2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]
    # Fall back (2024-10-27 03:00 -> 02:00): 02:30 happens twice, a fixed-hour job fires once.
    ticks = daily.due_ticks(berlin(2024, 10, 26, 0), berlin(2024, 10, 28, 12), 10)
    assert [local(t) for t in ticks] == [
        "2024-10-26T02:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
    assert ticks[2] - ticks[1] == 25 * HOUR  # the day of the change has 25 hours
    # A step in the hour field fires in both passes of the repeated hour, as Debian cron does.
    half_hourly = Schedule("hh", cron="*/30 2 * * *", timezone="Europe/Berlin").timing
    ticks = half_hourly.due_ticks(berlin(2024, 10, 27, 0), berlin(2024, 10, 27, 5), 10)
    assert [local(t) for t in ticks] == [
        "2024-10-27T02:00:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:30:00+01:00"]
    assert local(daily.next_after(berlin(2024, 3, 31, 0))) == "2024-03-31T03:00:00+02:00"


def test_cron_with_seconds_and_reverse_edges() -> None:
    every_10_s = Schedule("s", cron="*/10 * * * * *", timezone="Europe/Berlin").timing
    assert every_10_s.due_ticks(100.0, 130.0, 10) == [100.0, 110.0, 120.0, 130.0]
    assert every_10_s.due_ticks(100.0, 129.9, 10) == [100.0, 110.0, 120.0]
    assert every_10_s.next_after(120.0) == 130.0 and every_10_s.next_after(119.5) == 120.0


def test_missed_ticks_are_the_newest_ones_and_bounded() -> None:
    every_5_min = Schedule("m", cron="*/5 * * * *").timing
    start = datetime.fromisoformat("2024-01-01T00:00:00+00:00").timestamp()
    now = start + 400 * 24 * HOUR + 7 * 60  # down for 400 days: the scan stays bounded
    ticks = every_5_min.due_ticks(start, now, 3)
    assert [datetime.fromtimestamp(t, ZoneInfo("UTC")).strftime("%H:%M") for t in ticks] == ["23:55", "00:00", "00:05"]
    assert every_5_min.due_ticks(start, start, 3) == [start]
    assert every_5_min.due_ticks(start, start - 1, 3) == []
    interval = Schedule("i", every_s=60).timing
    assert interval.due_ticks(60.0, 300.5, 100) == [60.0, 120.0, 180.0, 240.0, 300.0]
    assert interval.due_ticks(60.0, 300.5, 2) == [240.0, 300.0]
    assert interval.next_after(300.0) == 360.0 and interval.next_after(299.9) == 300.0


def test_the_client_key_names_the_tick_in_utc() -> None:
    schedule = Schedule("nightly", cron="0 3 * * *", timezone="Europe/Berlin")
    assert schedule.client_key(berlin(2024, 7, 1, 3)) == "schedule:nightly:2024-07-01T01:00:00+00:00"


# -- running them (harness: in-memory broker, SQLite, fake clock) ------------------------------------------


async def _client_keys(env) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    keys: dict[str, list[str]] = {}
    for process_id in await env.flow.store.find_ids(ProcessFilter(case="report")):
        doc = await env.get(process_id)
        keys.setdefault(doc.input["kind"], []).append(doc.client_key)
    return {kind: sorted(v) for kind, v in keys.items()}


async def test_skip_fires_the_newest_missed_tick_and_catch_up_the_newest_few() -> None:
    clock = FakeClock(datetime.fromisoformat("2024-05-01T10:30:00+00:00").timestamp())
    async with run_cases([Report], clock=clock) as env:
        await env.advance(5 * HOUR)  # 11:00 .. 15:00 passed unseen
        keys = await _client_keys(env)
        assert keys == {
            "skip": ["schedule:hourly-skip:2024-05-01T15:00:00+00:00"],
            "catch_up": [f"schedule:hourly-catch-up:2024-05-01T{h}:00:00+00:00" for h in (13, 14, 15)],
        }
        await env.advance(HOUR)  # one more tick each, and nothing twice
        keys = await _client_keys(env)
        assert len(keys["skip"]) == 2 and len(keys["catch_up"]) == 4
        assert (await env.flow.store.count_by_status()) == {"completed": 6}


async def test_a_tick_fired_again_after_a_lost_advance_makes_no_second_process() -> None:
    clock = FakeClock(datetime.fromisoformat("2024-05-01T10:30:00+00:00").timestamp())
    async with run_cases([Report], clock=clock) as env:
        await env.advance(HOUR)
        fired = await _client_keys(env)
        row = {r.name: r for r in await env.flow.store.schedules()}["hourly-skip"]
        # As if the worker died after starting the 11:00 process but before moving the schedule on:
        assert await env.flow.store.advance_schedule(
            "hourly-skip", expected_next_fire_at=row.next_fire_at, next_fire_at=row.last_tick, last_tick=row.last_tick,
            fired_at=clock.now())
        assert await env.flow.schedules.fire_due() == 0  # started again: the client key finds the process
        assert await _client_keys(env) == fired == {
            "skip": ["schedule:hourly-skip:2024-05-01T11:00:00+00:00"],
            "catch_up": ["schedule:hourly-catch-up:2024-05-01T11:00:00+00:00"]}
        assert (await env.flow.schedules.get("hourly-skip"))["next_fire_at"] == "2024-05-01T12:00:00+00:00"


async def test_pause_stops_ticks_and_resume_starts_from_the_next_one() -> None:
    clock = FakeClock(datetime.fromisoformat("2024-05-01T10:30:00+00:00").timestamp())
    async with run_cases([Report], clock=clock) as env:
        paused = await env.flow.schedules.pause("hourly-catch-up")
        assert paused["paused"] is True
        await env.advance(3 * HOUR)
        assert "catch_up" not in await _client_keys(env)
        resumed = await env.flow.schedules.resume("hourly-catch-up")
        assert resumed["paused"] is False and resumed["next_fire_at"] == "2024-05-01T14:00:00+00:00"
        await env.advance(HOUR)
        assert (await _client_keys(env))["catch_up"] == ["schedule:hourly-catch-up:2024-05-01T14:00:00+00:00"]
        with pytest.raises(ScheduleNotFoundError, match="no schedule 'nope'"):
            await env.flow.schedules.pause("nope")


async def test_sync_keeps_state_resets_on_a_new_timing_and_fires_only_its_own_definition() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = SqliteStore(":memory:")
    started: list[str] = []

    async def start(case, input, *, client_key):  # type: ignore[no-untyped-def]
        started.append(client_key)
        return SimpleNamespace(process_id=client_key), True

    def scheduler(schedule: Schedule) -> Scheduler:
        return Scheduler(store=store, clock=clock, start=start, schedules={schedule.name: schedule})

    async with store:
        old = scheduler(Schedule("s", every_s=60, case="report", input={"kind": "a"}))
        await old.sync()
        await old.pause("s")
        first = (await old.list())[0]
        clock.advance(600)
        same_timing = scheduler(Schedule("s", every_s=60, case="report", input={"kind": "b"}))
        await same_timing.sync()  # input changed: next_fire_at and the pause are kept
        row = (await same_timing.list())[0]
        assert row["input"] == {"kind": "b"} and row["paused"] and row["next_fire_at"] == first["next_fire_at"]
        await same_timing.resume("s")
        assert await old.fire_due() == 0 and started == []  # not its definition any more
        clock.advance(60)
        assert await same_timing.fire_due() == 1 and len(started) == 1
        new_timing = scheduler(Schedule("s", every_s=3600, case="report", input={"kind": "b"}))
        await new_timing.sync()
        row = (await new_timing.list())[0]
        assert row["paused"] is False and row["next_fire_at"] == "2023-11-14T23:00:00+00:00"


def test_cli_lists_pauses_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEFLOW_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("STAGEFLOW_BROKER_URL", "memory://")
    monkeypatch.setenv("STAGEFLOW_CASES", "tests.support.schedule_cases")
    runner = CliRunner()
    empty = runner.invoke(cli, ["schedules", "list"])
    assert empty.exit_code == 0 and empty.stdout == "" and "workers write them when they start" in empty.stderr

    async def sync() -> None:
        async with Stageflow.from_settings(Settings()) as flow:
            await flow.schedules.sync()

    asyncio.run(sync())
    lines = runner.invoke(cli, ["schedules", "list"]).stdout.splitlines()
    assert [line.split("  ")[:4] for line in lines] == [
        ["daily-catch-up", "daily_catch_up", "active", "every 86400 s"],
        ["daily-skip", "daily_skip", "active", "every 86400 s"],
        ["every-2-seconds", "cron_ticked", "active", "cron '*/2 * * * * *' in Europe/Berlin"],
        ["every-second", "ticked", "active", "every 1 s"],
    ]
    assert runner.invoke(cli, ["schedules", "pause", "daily-skip"]).stdout.startswith("daily-skip  daily_skip  paused")
    assert "daily-skip  daily_skip  paused" in runner.invoke(cli, ["schedules", "list"]).stdout
    assert "daily_skip  active" in runner.invoke(cli, ["schedules", "resume", "daily-skip"]).stdout
    missing = runner.invoke(cli, ["schedules", "resume", "nope"])
    assert missing.exit_code == 2 and "no schedule 'nope'" in missing.stderr and "Traceback" not in missing.output


async def test_readme_schedules_example_runs() -> None:
    from tests.test_readme import _run

    nightly_import = _run("Schedules")["NightlyImport"]
    clock = FakeClock(berlin(2024, 3, 30, 12))  # the night clocks go forward in Berlin
    async with run_cases([nightly_import], clock=clock) as env:  # type: ignore[list-item]
        await env.advance(24 * HOUR)
        keys = sorted([(await env.get(pid)).client_key for pid in await env.flow.store.find_ids(ProcessFilter())])
    assert [k for k in keys if "nightly" in k] == ["schedule:nightly-import:2024-03-31T01:00:00+00:00"]  # 03:00 CEST
    assert len([k for k in keys if "hourly" in k]) == 24  # every missed hourly (UTC) tick caught up
