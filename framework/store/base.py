"""The store contract: where process documents live.

A store keeps one document per process and an append-only history of its transitions. Its one hot
operation is ``commit``: a compare-and-set write of the whole document (new state and outbox) together
with the transition's history entry, applied only if the document is still at ``expected_version``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Self

from framework.document import ProcessDocument


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """Which processes an operator action (or a list) is about; ``None`` means any."""

    case: str | None = None
    status: str | None = None
    failed_stage: str | None = None
    created_after: float | None = None
    created_before: float | None = None


class ProcessStore(ABC):
    """Async contract every store implements. Constructors do no I/O: call ``open()`` (or ``async with``)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent, safe with many workers starting)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create(
        self, doc: ProcessDocument, entry: dict[str, Any], *, due_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        """Insert a new process. If its ``(case, client_key)`` is taken, return ``(existing, False)``."""

    @abstractmethod
    async def load(self, process_id: str) -> ProcessDocument | None: ...

    @abstractmethod
    async def commit(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, due_at: float | None,
        expires_at: float | None,
    ) -> bool:
        """Write ``doc`` (already at ``expected_version + 1``) and its history entry if the stored document
        is still at ``expected_version``. Return False, writing nothing, if it is not.

        ``due_at`` is when a worker must look at the document by itself (timer, overdue outbox);
        ``expires_at`` when a finished process may be deleted."""

    @abstractmethod
    async def history(self, process_id: str) -> list[dict[str, Any]]:
        """The history entries of a process, oldest first."""

    @abstractmethod
    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        """How many processes are in each status (of one case, or of all)."""

    @abstractmethod
    async def due(self, now: float, limit: int) -> list[ProcessDocument]:
        """Documents whose ``due_at`` is at or before ``now``, earliest first."""

    @abstractmethod
    async def claim_due(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        """Move a due document's ``due_at`` to ``next_at`` if it is still at ``version`` and due; True if this
        caller won (with many workers, exactly one does)."""

    @abstractmethod
    async def find_ids(self, where: ProcessFilter, *, after: str | None = None, limit: int = 500) -> list[str]:
        """Ids of processes matching ``where``, in id order, after ``after`` (keyset pagination)."""

    @abstractmethod
    async def delete_expired(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` finished processes (and their history) whose ``expires_at`` has passed,
        and isolated-run counts untouched for a day."""

    @abstractmethod
    async def count_isolated_run(self, key: str, now: float) -> int:
        """Count one more run of the redelivered message ``key`` on its own; return how many so far.

        Only redelivered messages are counted (a crash made them come back), so the hot path never
        writes here. See the worker's poison handling."""

    @abstractmethod
    async def forget_isolated_runs(self, key: str) -> None:
        """The message ``key`` was settled: drop its count."""
