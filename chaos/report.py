"""A scenario's figures, the table and the totals line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COLUMNS = (
    ("scenario", 16), ("started", 7), ("completed", 9), ("failed_as_designed", 18), ("lost", 4), ("twice", 5),
    ("parked", 6), ("kills", 5), ("gap_s", 5), ("drain_s", 7), ("total_s", 7), ("ok", 4),
)


@dataclass
class Result:
    name: str
    title: str
    started: int = 0
    completed: int = 0
    failed_as_designed: int = 0
    failed_unexpectedly: int = 0
    lost: int = 0  # not completed/failed/cancelled when the drain time was up
    applied_twice: int = 0  # doubled stage commits (ledger) + doubled effects (effects table)
    parked: int = 0
    kills: int = 0  # SIGKILLs: sent by the suite, or (poison) by a stage to its own worker
    drain_s: float | None = None  # from the end of the faults (and of the starts) until all finished
    longest_gap_s: float | None = None  # the longest stretch without a committed transition (cluster scenarios)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.applied_twice == 0

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.name, "started": self.started, "completed": self.completed,
            "failed_as_designed": self.failed_as_designed, "lost": self.lost, "twice": self.applied_twice,
            "parked": self.parked, "kills": self.kills,
            "gap_s": "-" if self.longest_gap_s is None else f"{self.longest_gap_s:.1f}",
            "drain_s": "-" if self.drain_s is None else f"{self.drain_s:.1f}",
            "total_s": f"{self.seconds:.1f}", "ok": "yes" if self.ok else "NO",
        }

    def summary(self) -> dict[str, Any]:
        return {
            "started": self.started, "completed": self.completed, "failed_as_designed": self.failed_as_designed,
            "failed_unexpectedly": self.failed_unexpectedly, "lost": self.lost, "applied_twice": self.applied_twice,
            "parked": self.parked, "kills": self.kills, "drain_s": self.drain_s, "longest_gap_s": self.longest_gap_s,
            "seconds": round(self.seconds, 1),
            "ok": self.ok, "problems": self.problems, **self.details,
        }


def table(results: list[Result]) -> str:
    def line(values: dict[str, Any]) -> str:
        return "  ".join(str(values[name]).rjust(width) if name != "scenario" else str(values[name]).ljust(width)
                         for name, width in COLUMNS)

    header = line({name: name for name, _ in COLUMNS})
    rows = [line(r.row()) for r in results]
    total = Result("TOTAL", "")
    for r in results:
        for attr in ("started", "completed", "failed_as_designed", "lost", "applied_twice", "parked", "kills"):
            setattr(total, attr, getattr(total, attr) + getattr(r, attr))
        total.seconds += r.seconds
        total.problems += r.problems
    rule = "-" * len(header)
    notes = [f"  {r.name}: {r.title}" for r in results]
    return "\n".join([header, rule, *rows, rule, line(total.row()), "", *notes])


def totals(results: list[Result], *, quick: bool, seed: int) -> dict[str, Any]:
    def total(attr: str) -> int:
        return sum(getattr(r, attr) for r in results)

    return {
        "started": total("started"),
        "completed": total("completed"),
        "failed_as_designed": total("failed_as_designed"),
        "lost": total("lost"),
        "applied_twice": total("applied_twice"),
        "parked": total("parked"),
        "kills": total("kills"),
        "failed_unexpectedly": total("failed_unexpectedly"),
        "ok": all(r.ok for r in results),
        "quick": quick,
        "seed": seed,
        "seconds": round(sum(r.seconds for r in results), 1),
        "scenarios": {r.name: r.summary() for r in results},
    }
