"""Declaring schedules: start a process of a case on every tick of a cron expression or a fixed interval.

    class NightlyImport(BusinessCase):
        schedules = [
            Schedule("nightly-import", cron="0 3 * * *", timezone="Europe/Berlin", input={"feed": "daily"}),
            Schedule("heartbeat", every_s=300, missed="catch_up", max_catch_up=12),
        ]

A schedule is checked when it is declared (cron syntax, time zone, interval) and its input when the case
class is defined. Ticks are computed the same way by every worker, so a tick has one name
(``schedule:<name>:<tick in UTC ISO 8601>``), which is the client key of the process it starts: however
many workers see the tick, or however often one retries after a crash, one process exists per tick.

Cron expressions are evaluated by ``cronsim`` in the schedule's time zone (``zoneinfo``): five fields
(minute hour day-of-month month day-of-week), or six with seconds first (``*/10 * * * * *``). Across
DST changes a five-field expression behaves like Debian's cron: a time skipped when clocks go forward
fires right after the change (02:30 becomes 03:00); when clocks go back, a job at a fixed hour fires
once, while ``*``/step hour fields fire in both passes of the repeated hour. (Six-field expressions get
no such special case: they follow the wall clock.) Intervals tick at whole multiples of ``every_s``
since the Unix epoch, so ``every_s=3600`` fires on the hour (UTC).
"""

from __future__ import annotations

import math
import re
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from framework.errors import ConfigurationError

Missed = Literal["skip", "catch_up"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule ticks: a cron expression in a time zone, or every ``every_s`` whole seconds."""

    cron: str | None = None
    timezone: str | None = None
    every_s: int | None = None

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (epoch seconds)."""
        if self.every_s is not None:
            return float((math.floor(t) // self.every_s + 1) * self.every_s)
        return next(self._cron(t)).timestamp()

    def due_ticks(self, start: float, now: float, limit: int) -> list[float]:
        """The newest ``limit`` ticks in ``[start, now]``, oldest first (the ticks missed since ``start``)."""
        if now < start:
            return []
        if self.every_s is not None:
            first = math.ceil(start / self.every_s)
            last = math.floor(now / self.every_s)
            return [float(k * self.every_s) for k in range(max(first, last - limit + 1), last + 1)]
        ticks: list[float] = []
        # Backwards from now (ticks are whole seconds: strictly before floor(now) + 1 means at or before now).
        for when in self._cron(math.floor(now) + 1, reverse=True):
            tick = when.timestamp()
            if tick < start or len(ticks) == limit:
                break
            ticks.append(tick)
        return ticks[::-1]

    def describe(self) -> str:
        return f"cron {self.cron!r} in {self.timezone}" if self.cron else f"every {self.every_s} s"

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone} if self.cron else {"every_s": self.every_s}

    @classmethod
    def from_json(cls, raw: str | bytes) -> Timing:
        return cls(**orjson.loads(raw))

    def _cron(self, t: float, *, reverse: bool = False) -> CronSim:
        return CronSim(self.cron or "", datetime.fromtimestamp(t, ZoneInfo(self.timezone or "UTC")), reverse=reverse)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Start a process of the case that declares it (in its ``schedules`` list) on every tick.

    Give ``cron`` (five fields, or six with seconds first; ``timezone`` defaults to UTC) or ``every_s``
    (whole seconds, at least 1).
    ``missed`` says what happens to ticks that passed while no worker ran (or the store was down):
    ``"skip"`` fires once, for the newest missed tick; ``"catch_up"`` fires each missed tick, oldest first,
    but at most the newest ``max_catch_up`` of them. Ticks during a pause are never fired.
    """

    name: str
    _: KW_ONLY
    input: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str | None = None
    every_s: int | float | timedelta | None = None
    missed: Missed = "skip"
    max_catch_up: int = 10
    case: str | None = None  # set from the declaring case class
    timing: Timing = field(init=False)

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigurationError(
                f"schedule name {self.name!r} is not valid",
                hint="use up to 100 lowercase letters, digits, '_', '-' or '.', starting with a letter or digit",
            )
        object.__setattr__(self, "timing", _timing(where, self.cron, self.timezone, self.every_s))
        if self.missed not in ("skip", "catch_up"):
            raise ConfigurationError(f"{where}: missed={self.missed!r}", hint="use missed='skip' or 'catch_up'")
        if not isinstance(self.max_catch_up, int) or isinstance(self.max_catch_up, bool) or not (
            1 <= self.max_catch_up <= 1000
        ):
            raise ConfigurationError(f"{where}: max_catch_up must be an int from 1 to 1000")
        if not isinstance(self.input, dict):
            raise ConfigurationError(f"{where}: input must be a dict (the case's input)")

    def client_key(self, tick: float) -> str:
        """The client key of the process started for ``tick``: the same on every worker."""
        return f"schedule:{self.name}:{datetime.fromtimestamp(tick, UTC).isoformat()}"

    def definition(self) -> str:
        """Everything that defines this schedule, as canonical JSON (stored, and compared across workers)."""
        return orjson.dumps(
            {"case": self.case, "input": self.input, "timing": self.timing.to_dict(), "missed": self.missed,
             "max_catch_up": self.max_catch_up},
            option=orjson.OPT_SORT_KEYS,
        ).decode()


def _timing(where: str, cron: str | None, timezone: str | None, every_s: Any) -> Timing:
    if (cron is None) == (every_s is None):
        raise ConfigurationError(f"{where} needs exactly one of cron=... or every_s=...",
                                 hint='e.g. cron="*/5 * * * *" or every_s=300')
    if every_s is not None:
        if timezone is not None:
            raise ConfigurationError(f"{where}: timezone applies to cron schedules only",
                                     hint="intervals tick at multiples of every_s since the epoch, in UTC")
        seconds = every_s.total_seconds() if isinstance(every_s, timedelta) else every_s
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 1 or seconds % 1:
            raise ConfigurationError(f"{where}: every_s must be a whole number of seconds, at least 1, got {every_s!r}")
        return Timing(every_s=int(seconds))
    zone = timezone or "UTC"
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{where}: unknown time zone {zone!r}",
                                 hint="use an IANA name such as 'Europe/Berlin' or 'UTC'") from None
    if not isinstance(cron, str):
        raise ConfigurationError(f"{where}: cron must be a string such as '0 3 * * *'")
    try:
        next(CronSim(cron, datetime(2000, 1, 1, tzinfo=tz)))
    except CronSimError as exc:
        raise ConfigurationError(
            f"{where}: invalid cron expression {cron!r}: {exc}",
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'; "
            "or six with seconds first, e.g. '*/10 * * * * *'",
        ) from None
    except StopIteration:
        raise ConfigurationError(f"{where}: cron expression {cron!r} never fires") from None
    return Timing(cron=cron, timezone=zone)
