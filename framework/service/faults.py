"""A fault-test hook for service processes: pause after an effect committed, before its reply goes out.

``STAGEFLOW_TEST_PAUSE_AFTER_COMMIT=<file>`` (tests only) makes the built-in services append each such
command's taskId to ``<file>`` and then hang, so a test can SIGKILL the process in the one window that only
the inbox closes: the effect is committed, the reply was never sent, the command will be redelivered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from framework.messages import ServiceCommand
from framework.service.sdk import AfterCommit

_PAUSE_S = 3600.0  # the test kills the process long before


def pause_after_commit(marker: str | None) -> AfterCommit | None:
    if not marker:
        return None
    path = Path(marker)

    def note(task_id: str) -> None:
        with path.open("a") as out:
            out.write(task_id + "\n")

    async def hook(command: ServiceCommand) -> None:
        await asyncio.to_thread(note, command.task_id)
        await asyncio.sleep(_PAUSE_S)

    return hook
