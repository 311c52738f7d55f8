"""CPU seconds used by the broker, the database and Python, read from /proc around a measured window.

* **broker**: every ``beam.smp`` process (RabbitMQ's Erlang VM).
* **database**: every ``postgres`` process, plus the postmaster's reaped children (a backend that exits
  during the window hands its time to the postmaster's ``cutime``/``cstime``).
* **python**: this process (the driver) and all its descendants (the worker subprocesses), plus the
  reaped children's time, so a worker that exits inside the window is still counted.

These are machine-wide for broker and database: anything else using the same servers at the same time
(another benchmark, a test suite) is counted too. On a machine without /proc every figure is None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


@dataclass(frozen=True)
class _Stat:
    pid: int
    ppid: int
    comm: str
    own_s: float  # utime + stime
    children_s: float  # cutime + cstime: reaped children


@dataclass(frozen=True)
class CpuSample:
    broker_s: float
    database_s: float
    python_s: float

    def minus(self, earlier: CpuSample) -> dict[str, float]:
        return {
            "broker_cpu_s": round(self.broker_s - earlier.broker_s, 2),
            "database_cpu_s": round(self.database_s - earlier.database_s, 2),
            "python_cpu_s": round(self.python_s - earlier.python_s, 2),
        }


def _read(pid: int) -> _Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # the process ended while we looked
        return None
    # The command name may hold spaces and parentheses: it ends at the last ')'.
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return _Stat(pid, int(fields[1]), comm, (utime + stime) * TICK_S, (cutime + cstime) * TICK_S)


def sample() -> CpuSample | None:
    if not PROC.is_dir():
        return None
    stats = [s for s in (_read(int(p.name)) for p in PROC.iterdir() if p.name.isdigit()) if s is not None]
    by_pid = {s.pid: s for s in stats}
    broker = sum(s.own_s for s in stats if s.comm == "beam.smp")
    postgres = [s for s in stats if s.comm == "postgres"]
    database = sum(s.own_s for s in postgres) + sum(
        s.children_s for s in postgres if by_pid.get(s.ppid, s).comm != "postgres"  # the postmaster
    )
    me = os.getpid()
    children: dict[int, list[_Stat]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s)
    python = 0.0
    todo = [by_pid[me]] if me in by_pid else []
    while todo:
        s = todo.pop()
        python += s.own_s + s.children_s
        todo.extend(children.get(s.pid, []))
    return CpuSample(broker, database, python)


def used(before: CpuSample | None, after: CpuSample | None) -> dict[str, float | None]:
    if before is None or after is None:
        return {"broker_cpu_s": None, "database_cpu_s": None, "python_cpu_s": None}
    return dict(after.minus(before))
