"""The store contract: where process documents live.

A store keeps one document per process and an append-only history of its transitions. Its one hot
operation is ``commit``: a compare-and-set write of the whole document (new state and outbox) together
with the transition's history entry, applied only if the document is still at ``expected_version``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

from framework.document import ProcessDocument


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
        self, doc: ProcessDocument, entry: dict[str, Any], *, relay_at: float | None
    ) -> tuple[ProcessDocument, bool]:
        """Insert a new process. If its ``(case, client_key)`` is taken, return ``(existing, False)``."""

    @abstractmethod
    async def load(self, process_id: str) -> ProcessDocument | None: ...

    @abstractmethod
    async def commit(
        self, doc: ProcessDocument, entry: dict[str, Any], *, expected_version: int, relay_at: float | None
    ) -> bool:
        """Write ``doc`` (already at ``expected_version + 1``) and its history entry if the stored document
        is still at ``expected_version``. Return False, writing nothing, if it is not."""

    @abstractmethod
    async def history(self, process_id: str) -> list[dict[str, Any]]:
        """The history entries of a process, oldest first."""

    @abstractmethod
    async def count_by_status(self, case: str | None = None) -> dict[str, int]:
        """How many processes are in each status (of one case, or of all)."""

    @abstractmethod
    async def due_relays(self, now: float, limit: int) -> list[ProcessDocument]:
        """Documents whose outbox may not have been published: ``relay_at`` is at or before ``now``."""

    @abstractmethod
    async def claim_relay(self, process_id: str, version: int, now: float, next_at: float | None) -> bool:
        """Move a due relay to ``next_at`` if the document is still at ``version``; True if this caller won."""
