"""One user at a time of something machine-wide: the RabbitMQ cluster's fixed ports, the PostgreSQL pair's
cluster names. The tests, ``make chaos`` and ``make bench`` all start them; two runs at once would break each
other (``PgHa.start`` drops a pair it takes for leftovers). An ``flock`` is released when its holder dies, so a
killed run leaves nothing locked, and what it left behind is then truly a leftover.
"""

from __future__ import annotations

import fcntl
import sys
import tempfile
import time
from pathlib import Path
from typing import IO


class HostLock:
    def __init__(self, name: str) -> None:
        self.path = Path(tempfile.gettempdir()) / f"stageflow-{name}.lock"
        self._file: IO[str] | None = None

    def acquire(self, timeout_s: float = 900.0) -> None:
        """Wait (saying so once, on stderr) until no other run holds the lock."""
        if self._file is not None:
            return
        lock = self.path.open("a+")
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._file = lock
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise TimeoutError(f"another run held {self.path} for {timeout_s:g} s") from None
                if not told:
                    print(f"[stageflow] another run holds {self.path}; waiting for it", file=sys.stderr, flush=True)
                    told = True
                time.sleep(0.5)

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
