"""The broker contract: confirmed publishing, manual-ack consuming, and parking bad messages.

Queues are named logically: ``inner`` (stage transitions), ``service`` (service replies), ``parked``
(messages set aside with a reason) and ``command:<api>`` (commands for one service). Each broker maps
them to its own names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

INNER = "inner"
SERVICE = "service"
PARKED = "parked"
_COMMAND_PREFIX = "command:"

REASON_HEADER = "x-stageflow-reason"
SOURCE_HEADER = "x-stageflow-source"


def command_queue(api: str) -> str:
    return _COMMAND_PREFIX + api


@dataclass(frozen=True, slots=True)
class Outgoing:
    queue: str
    message_id: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)


class Delivery(ABC):
    """One received message. Exactly one of ``ack``/``nack`` must be called (the broker's ``park`` acks)."""

    queue: str
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any]
    redelivered: bool
    delivery_count: int

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def nack(self, *, requeue: bool) -> None: ...


Handler = Callable[[Delivery], Coroutine[Any, Any, None]]  # a coroutine: consumers run each in a task


class Consumer(ABC):
    """A running subscription; ``cancel()`` stops new deliveries (in-flight ones stay with their handlers)."""

    @abstractmethod
    async def cancel(self) -> None: ...


class Broker(ABC):
    """Async contract every broker implements. Constructors do no I/O: call ``connect()`` (or ``async with``)."""

    reconnects: int = 0  # connections re-established after a loss (read by the metrics when scraped)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def connect(self) -> None:
        """Connect and declare the topology (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish persistently; returns once the broker has confirmed every message, else raises."""

    @abstractmethod
    async def ping(self) -> None:
        """One cheap round trip; raise ``BrokerError`` if the broker is not reachable."""

    @abstractmethod
    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        """Start delivering ``queue``'s messages to ``handler``, at most ``prefetch`` unacked at once."""

    async def park(self, delivery: Delivery, reason: str) -> None:
        """Set a message aside on the parked queue with its reason, then ack the original."""
        headers = dict(delivery.headers)
        headers[REASON_HEADER] = reason[:1000]
        headers[SOURCE_HEADER] = delivery.queue
        await self.publish([Outgoing(PARKED, delivery.message_id or "", delivery.body, headers)])
        await delivery.ack()
