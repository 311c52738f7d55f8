"""Running schedules: sync their definitions to the store, fire due ticks, list, pause and resume them.

Exactly one process per tick, with any number of workers: every worker's due-work loop reads the due
schedule rows, **starts** the tick's process with the client key ``schedule:<name>:<tick>`` (one key never
makes two processes), and only **then** advances the row's ``next_fire_at`` with a compare-and-set. Two
workers on one tick start it twice and get one process; a worker that dies between start and advance
leaves the row due, and the next worker's start finds the process already there. Nothing is lost, as no
tick is marked fired before its process exists.

The definitions live in code (``schedules = [...]`` on a case); rows hold their state. A worker syncs its
definitions on start: a new schedule gets a row, a changed timing resets ``next_fire_at`` to the next tick,
and the pause state is kept. A worker fires only rows whose stored definition equals its own, so during
a deploy old and new workers do not fight over a changed schedule: the last one synced is the one that
runs, by the workers that have it. Rows of schedules removed from code stay (visible, never fired).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog

from framework.case import BusinessCase
from framework.clock import Clock
from framework.errors import ConfigurationError, InfrastructureError, ScheduleNotFoundError, StageflowError
from framework.schedules import Schedule, Timing
from framework.store.protocols import ScheduleStore
from framework.store.records import ScheduleRow

log = structlog.get_logger("stageflow.scheduler")

class StartProcess(Protocol):
    """What the scheduler needs: start a process of ``case``, at most once per client key; the process and
    whether it is new (``framework.starter.Starter`` is one)."""

    async def __call__(self, case: str, input: Any = None, *, client_key: str | None = None) -> tuple[Any, bool]: ...


def collect_schedules(cases: Iterable[type[BusinessCase]]) -> dict[str, Schedule]:
    """The schedules declared on ``cases`` (the newest version of each), by name; a name used twice is an error."""
    found: dict[str, Schedule] = {}
    for case in cases:
        for schedule in case.schedules:
            other = found.get(schedule.name)
            if other is not None and other != schedule:
                raise ConfigurationError(
                    f"two schedules are named {schedule.name!r} (cases {other.case!r} and {schedule.case!r})",
                    hint="schedule names are global: give each a unique name",
                )
            found[schedule.name] = schedule
    return found


class Scheduler:
    def __init__(self, *, store: ScheduleStore, clock: Clock, start: StartProcess, schedules: dict[str, Schedule]):
        self.store = store
        self.clock = clock
        self._start = start
        self._schedules = schedules
        self._definitions = {name: s.definition() for name, s in schedules.items()}
        self._unsynced: set[str] = set()

    def add(self, schedules: dict[str, Schedule]) -> None:
        """Schedules of cases registered later (stored workflows): synced by the next ``fire_due``, which only
        workers run, so a gateway that learns of them writes nothing."""
        for name, schedule in schedules.items():
            if self._definitions.get(name) != schedule.definition():
                self._schedules[name] = schedule
                self._definitions[name] = schedule.definition()
                self._unsynced.add(name)

    async def sync(self) -> None:
        """Write this worker's schedule definitions to the store (on worker start)."""
        await self._sync(sorted(self._schedules))

    async def _sync(self, names: list[str]) -> None:
        now = self.clock.now()
        for name in names:
            schedule = self._schedules[name]
            await self.store.sync_schedule(
                name, self._definitions[name], _timing_json(schedule.timing), schedule.timing.next_after(now), now
            )
            self._unsynced.discard(name)
        if names:
            log.info("schedules synced", schedules=names)

    async def fire_due(self) -> int:
        """Start the processes of due ticks; returns how many processes were created."""
        if not self._schedules:
            return 0
        if self._unsynced:
            await self._sync(sorted(self._unsynced))
        now = self.clock.now()
        created = 0
        for row in await self.store.due_schedules(list(self._schedules), now):
            if row.definition != self._definitions[row.name]:
                continue  # defined differently by another deployment: the workers that have it fire it
            schedule = self._schedules[row.name]
            limit = 1 if schedule.missed == "skip" else schedule.max_catch_up
            ticks = schedule.timing.due_ticks(row.next_fire_at, now, limit)
            for tick in ticks:
                created += await self._fire(schedule, tick)
            last = ticks[-1] if ticks else row.next_fire_at
            await self.store.advance_schedule(
                row.name, expected_next_fire_at=row.next_fire_at, next_fire_at=schedule.timing.next_after(now),
                last_tick=last, fired_at=now,
            )
        return created

    async def _fire(self, schedule: Schedule, tick: float) -> int:
        key = schedule.client_key(tick)
        if schedule.case is None:  # collect_schedules only finds schedules bound to the case declaring them
            raise ConfigurationError(f"schedule {schedule.name!r} is not declared on a case")
        try:
            doc, new = await self._start(schedule.case, schedule.input, client_key=key)
        except InfrastructureError:
            raise  # the row stays due: the next pass (here or on another worker) starts it
        except StageflowError as exc:
            # e.g. the same tick started with other input by a worker of an older deployment: it has fired
            log.warning("schedule tick not started", schedule=schedule.name, client_key=key, error=exc.message)
            return 0
        if new:
            log.info("schedule fired", schedule=schedule.name, client_key=key, process_id=doc.process_id)
        return int(new)

    async def list(self) -> list[dict[str, Any]]:
        """Every schedule in the store, as plain data (for the gateway and the CLI)."""
        return [_view(row) for row in await self.store.schedules()]

    async def pause(self, name: str) -> dict[str, Any]:
        """Stop firing ``name`` (workers that already read the row may start one more tick)."""
        if not await self.store.set_schedule_paused(name, True, now=self.clock.now()):
            raise _not_found(name)
        return await self.get(name)

    async def resume(self, name: str) -> dict[str, Any]:
        """Fire ``name`` again from its next tick; ticks during the pause are not fired."""
        row = await self._row(name)
        now = self.clock.now()
        next_fire_at = Timing.from_json(row.timing).next_after(now)
        await self.store.set_schedule_paused(name, False, now=now, next_fire_at=next_fire_at)
        return await self.get(name)

    async def get(self, name: str) -> dict[str, Any]:
        return _view(await self._row(name))

    async def _row(self, name: str) -> ScheduleRow:
        for row in await self.store.schedules():
            if row.name == name:
                return row
        raise _not_found(name)


def _not_found(name: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(f"no schedule {name!r}", hint="`stageflow schedules list` shows them")


def _timing_json(timing: Timing) -> str:
    return orjson.dumps(timing.to_dict(), option=orjson.OPT_SORT_KEYS).decode()


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _view(row: ScheduleRow) -> dict[str, Any]:
    definition = orjson.loads(row.definition)
    return {
        "name": row.name, "case": definition["case"], "input": definition["input"], **definition["timing"],
        "schedule": Timing.from_json(row.timing).describe(), "missed": definition["missed"],
        "max_catch_up": definition["max_catch_up"], "paused": row.paused, "next_fire_at": _iso(row.next_fire_at),
        "last_tick": _iso(row.last_tick), "last_fired_at": _iso(row.last_fired_at),
    }
