"""What a deploy asks of the store: which running release may stop, and whether a new release carries every
(case, version, stage) that live processes can still be resumed at. Pure functions over what the store
answers (``DeployStore``) and the cases a release registers; ``framework.cli_deploy`` prints them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from framework.registry import CaseRegistry
from framework.store.records import LiveGroup, WorkerRow

CaseVersion = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Release:
    """A running release: its workers, what it carries, and the live processes only it carries."""

    name: str
    workers: tuple[str, ...]
    carries: tuple[CaseVersion, ...]
    sole: tuple[tuple[CaseVersion, int], ...]  # ((case, version), live processes) no other running release carries

    @property
    def may_stop(self) -> bool:
        return not self.sole

    def verdict(self) -> str:
        if self.may_stop:
            return "may stop: every (case, version) with live processes is carried by another running release"
        return f"must keep running: {_on(self.sole)}, which only it carries"


@dataclass(frozen=True, slots=True)
class Missing:
    """A (case, version, stage) live processes may be resumed at, which the checked release lacks."""

    case: str
    version: int
    stage: str
    processes: int
    registered: bool  # the release has that case version (without the stage) or not at all

    def describe(self) -> str:
        why = (f"{self.case} v{self.version} has no stage {self.stage!r}" if self.registered
               else f"{self.case} v{self.version} is not registered")
        return (f"{self.case} v{self.version} stage {self.stage}: {processes_text(self.processes)} can be resumed"
                f" there ({why})")


def live_by_version(live: list[LiveGroup]) -> dict[CaseVersion, int]:
    counts: dict[CaseVersion, int] = defaultdict(int)
    for group in live:
        counts[(group.case, group.version)] += group.processes
    return dict(counts)


def releases(workers: list[WorkerRow], live: list[LiveGroup]) -> list[Release]:
    """Each running release (by name) with its verdict's facts."""
    by_release: dict[str, list[WorkerRow]] = defaultdict(list)
    for worker in workers:
        by_release[worker.release].append(worker)
    carried = {name: {pair for w in rows for pair in w.carries} for name, rows in by_release.items()}
    counts = live_by_version(live)
    found = []
    for name, rows in sorted(by_release.items()):
        others = set().union(*(pairs for other, pairs in carried.items() if other != name))
        sole = tuple((pair, n) for pair, n in sorted(counts.items()) if pair in carried[name] and pair not in others)
        found.append(Release(name, tuple(w.worker_id for w in rows), tuple(sorted(carried[name])), sole))
    return found


def uncarried(workers: list[WorkerRow], live: list[LiveGroup]) -> list[tuple[CaseVersion, int]]:
    """(case, version) pairs with live processes that no running release carries: they wait for one."""
    carried = {pair for w in workers for pair in w.carries}
    return [(pair, n) for pair, n in sorted(live_by_version(live).items()) if pair not in carried]


def missing(registry: CaseRegistry, live: list[LiveGroup]) -> list[Missing]:
    """Every (case, version, stage) in the reach of live processes that ``registry`` lacks."""
    carried = set(registry.carried())
    counts: dict[tuple[str, int, str], int] = defaultdict(int)
    for group in live:
        have = (set() if (group.case, group.version) not in carried
                else {s.name for s in registry.get(group.case, group.version).stages})
        for stage in (group.reach or "").split():
            if stage not in have:
                counts[(group.case, group.version, stage)] += group.processes
    return [Missing(case, version, stage, n, (case, version) in carried)
            for (case, version, stage), n in sorted(counts.items())]


def refused_processes(registry: CaseRegistry, live: list[LiveGroup]) -> int:
    """How many live processes could reach a stage ``registry`` lacks."""
    lacking = {(m.case, m.version, m.stage) for m in missing(registry, live)}
    return sum(g.processes for g in live if any((g.case, g.version, s) in lacking for s in (g.reach or "").split()))


def processes_text(n: int) -> str:
    return f"{n} live process" + ("" if n == 1 else "es")


def _on(pairs: tuple[tuple[CaseVersion, int], ...]) -> str:
    """"3 live processes on order v1, 1 on refund v2"."""
    return ", ".join(f"{processes_text(n) if i == 0 else n} on {case} v{version}" for i, ((case, version), n) in
                     enumerate(pairs))
