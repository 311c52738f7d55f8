"""Retry policies: how often a failed stage or service call is tried again, and after how long.

Backoff is exponential with a cap and jitter. The attempt count lives in the process document and every
wait is a due time in the store, so a retry never holds a RabbitMQ delivery open while it waits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from framework.errors import NonRetryableError, StageError


@dataclass(frozen=True, slots=True)
class Retry:
    """``attempts`` counts every try, the first included (``Retry(attempts=1)`` never retries).

    The n-th retry waits ``backoff_s * multiplier**(n-1)``, capped at ``max_backoff_s``, then spread by
    ``± jitter`` (a fraction) so that processes failing together do not retry together. Exceptions that
    are instances of ``retry_on`` are retried; ``NonRetryableError`` and anything else fail at once.
    """

    attempts: int = 1
    backoff_s: float = 1.0
    multiplier: float = 2.0
    max_backoff_s: float = 300.0
    jitter: float = 0.2
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts counts the first try too, so it must be >= 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Retry needs backoff_s >= 0, max_backoff_s >= 0, multiplier >= 1, 0 <= jitter <= 1")

    def delay_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        base = min(self.max_backoff_s, self.backoff_s * self.multiplier ** max(0, retry_number - 1))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def retries(self, exc: BaseException) -> bool:
        """Whether an exception raised by a stage is worth another attempt under this policy."""
        if isinstance(exc, NonRetryableError | StageError):
            return False
        return isinstance(exc, self.retry_on)


NO_RETRY = Retry(attempts=1)
