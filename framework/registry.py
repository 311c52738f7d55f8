"""The set of cases a worker or gateway knows, by name and version."""

from __future__ import annotations

from collections.abc import Iterable

from framework.case import BusinessCase
from framework.errors import CaseInactiveError, ConfigurationError, UnknownCaseError

KNOWN_CASES_HINT = "registered cases: "  # the gateway does not pass this list on to its callers


class CaseRegistry:
    """Cases by ``(name, version)``. Several versions of one case may be registered at once, so processes
    started on an old version finish on it while new ones start on the newest (blue-green deploys)."""

    def __init__(self, cases: Iterable[type[BusinessCase]]) -> None:
        self._cases: dict[tuple[str, int], type[BusinessCase]] = {}
        self._latest: dict[str, type[BusinessCase]] = {}
        self._closed: set[str] = set()  # names new processes may not start on (deactivated workflows)
        for case in cases:
            self.add(case)

    def add(self, case: type[BusinessCase]) -> None:
        """Register one more case version (stored workflows arrive while a worker runs)."""
        if not (isinstance(case, type) and issubclass(case, BusinessCase)) or not case.stages:
            raise ConfigurationError(f"{case!r} is not a BusinessCase subclass with stages")
        key = (case.name, case.version)
        if key in self._cases and self._cases[key] is not case:
            raise ConfigurationError(
                f"two cases are registered as {case.name!r} version {case.version}",
                hint="bump `version` on the newer one",
            )
        self._cases[key] = case
        current = self._latest.get(case.name)
        if current is None or case.version > current.version:
            self._latest[case.name] = case

    def has(self, name: str, version: int | None = None) -> bool:
        return name in self._latest if version is None else (name, version) in self._cases

    def close(self, name: str, closed: bool = True) -> None:
        """Refuse (or again allow) new processes of ``name``; its running processes go on either way."""
        if closed:
            self._closed.add(name)
        else:
            self._closed.discard(name)

    def for_start(self, name: str) -> type[BusinessCase]:
        """The version a new process of ``name`` starts on: the newest, unless new starts are closed."""
        case = self.latest(name)
        if name in self._closed:
            raise CaseInactiveError(f"workflow {name!r} is deactivated: it starts no new processes",
                                    hint=f"activate it (`stageflow workflow activate {name}`)", case=name)
        return case

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._latest.values())

    def carried(self) -> list[tuple[str, int]]:
        """Every registered (case, version), sorted."""
        return sorted(self._cases)

    def versions(self, name: str) -> list[int]:
        """Every registered version of case ``name``, oldest first."""
        return sorted(version for case_name, version in self._cases if case_name == name)

    def latest(self, name: str) -> type[BusinessCase]:
        try:
            return self._latest[name]
        except KeyError:
            known = ", ".join(sorted(self._latest)) or "none"
            raise UnknownCaseError(f"unknown case {name!r}", hint=KNOWN_CASES_HINT + known, case=name) from None

    def get(self, name: str, version: int) -> type[BusinessCase]:
        try:
            return self._cases[(name, version)]
        except KeyError:
            self.latest(name)  # raises for an unknown name
            raise UnknownCaseError(
                f"case {name!r} version {version} is not registered here",
                hint="keep old case versions registered until their processes have finished",
                case=name,
            ) from None
