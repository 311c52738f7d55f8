"""Signed taskIds: the token a service command carries and its reply brings back.

A taskId names the process, case, api, the stage its reply resumes and the transition it belongs to, so
a reply can be matched to exactly one waiting point of one process. It is signed (itsdangerous, HMAC)
so nobody without a secret can forge or alter one. Secrets rotate: the newest signs, all verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer

from framework.errors import ConfigurationError, TaskIdError

_SALT = "stageflow.taskid.v1"
MAX_TASK_ID_CHARS = 1024


@dataclass(frozen=True, slots=True)
class TaskRef:
    """What a taskId says."""

    process_id: str
    case: str
    api: str
    stage: str
    transition: int
    item: int | None = None  # the fan-out item a reply completes (the transition names the fan-out)


class TaskIdSigner:
    """Signs and verifies taskIds with a list of secrets, newest first."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        keys = [k for k in secret_keys if k]
        if not keys:
            raise ConfigurationError(
                "no secret key to sign taskIds", hint="set STAGEFLOW_SECRET_KEYS (comma-separated, newest first)"
            )
        # newest first: other signed things (inner messages, callbacks) derive their own keys from these
        self.secret_keys: tuple[str, ...] = tuple(keys)
        # itsdangerous signs with the last key and verifies with all of them.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=_SALT)

    def sign(self, ref: TaskRef) -> str:
        fields: list[str | int] = [ref.process_id, ref.case, ref.api, ref.stage, ref.transition]
        if ref.item is not None:
            fields.append(ref.item)
        return self._serializer.dumps(fields)

    @staticmethod
    def read_unverified(task_id: str) -> TaskRef | None:
        """What ``task_id`` says, its signature NOT checked: for labels only (a service without our keys names
        its trace spans with it), never for a decision. None if it is not a taskId's shape."""
        try:
            _, fields = URLSafeSerializer("", salt=_SALT).loads_unsafe(task_id[:MAX_TASK_ID_CHARS])
        except BadData:
            return None
        return _ref(fields)

    def verify(self, task_id: object) -> TaskRef:
        """Return what ``task_id`` says, or raise ``TaskIdError`` if it was not signed by one of our keys."""
        if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID_CHARS:
            raise TaskIdError("taskId is missing, not a string, or too long")
        try:
            fields = self._serializer.loads(task_id)
        except BadData as exc:
            raise TaskIdError(f"taskId rejected: {type(exc).__name__}") from None
        ref = _ref(fields)
        if ref is None:
            raise TaskIdError("taskId is signed but its content has the wrong shape")
        return ref


def _ref(fields: object) -> TaskRef | None:
    match fields:
        case [str(p), str(c), str(a), str(s), int(t)] if not isinstance(t, bool):
            return TaskRef(p, c, a, s, t)
        case [str(p), str(c), str(a), str(s), int(t), int(i)] if not (isinstance(t, bool) or isinstance(i, bool)):
            return TaskRef(p, c, a, s, t, i)
    return None
