"""Group concurrent calls into batches: many transitions in one round trip and one commit.

While a batch is running (``max_in_flight``, default one), new items wait and go together in the next
batch; when a batch slot is free an item goes at once. So a quiet worker adds no latency (a batch of one,
run in the caller's own task: no task, future or loop pass in between), and a busy one sends as many items
per round trip as arrived during the last one (up to ``max_size``): the batch size follows the load, with
no timer to tune.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await submit(item)`` returns this item's result from ``run(batch)``, which returns one result
    per item, in order; a result that is an exception is raised to that item's caller alone. If ``run``
    raises, every caller in that batch gets the exception.

    With a ``key``, items with the same key never share a batch (two commits of one document must see
    each other's outcome, so the second goes in a later batch).

    One batch in flight, not two: the second slot halves the batch size under load, and each round trip
    costs a socket write and a statement in the database (``make bench``: 2 slots 1,439 / 1,313 / 1,449
    hops/s, 1.28-1.41 ms CPU/hop; 1 slot 1,662 / 1,496 / 1,665, 1.10-1.25 ms, alternating runs).
    """

    def __init__(
        self, run: Callable[[list[T]], Awaitable[list[R | BaseException]]], *,
        key: Callable[[T], Hashable] | None = None,
        max_size: int = 100, max_in_flight: int = 1,
    ) -> None:
        self._run = run
        self._key = key
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_batch: Callable[[int], None] | None = None  # told each batch's size (the metrics' histogram)

    async def submit(self, item: T) -> R:
        if self._in_flight == 0 and not self._waiting:
            return await self._run_alone(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_batches()
        return await future

    async def _run_alone(self, item: T) -> R:
        """Nothing else in flight: run a batch of one here. Items submitted meanwhile wait for it as usual."""
        self._in_flight += 1
        if self.on_batch is not None:
            self.on_batch(1)
        try:
            (result,) = await self._run([item])
        finally:
            self._in_flight -= 1
            self._start_batches()
        if isinstance(result, BaseException):
            raise result
        return result

    def _start_batches(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            # The batch is taken when the task first runs, so items submitted in the same loop pass join it.
            task = asyncio.create_task(self._run_batch())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for item, future in self._waiting:
            if future.done():  # its caller was cancelled before the batch left: drop it
                continue
            key = None if self._key is None else self._key(item)
            if len(batch) >= self._max_size or (key is not None and key in keys):
                rest.append((item, future))
                continue
            keys.add(key)
            batch.append((item, future))
        self._waiting = rest
        return batch

    async def _run_batch(self) -> None:
        try:
            batch = self._take()
            if not batch:
                return
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await self._run([item for item, _ in batch])
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._start_batches()


@runtime_checkable
class BatchingStore(Protocol):
    """A store that batches its writes and can say how large each batch is (``name``: loads, commits...)."""

    def observe_batches(self, callback: Callable[[str, int], None]) -> None: ...
