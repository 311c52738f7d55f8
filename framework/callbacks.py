"""Callback tokens: signed, expiring, single-use capabilities that deliver one event to one process.

A stage gets one from ``ctx.wait_for(..., token=True)`` or ``ctx.callback_token(name)`` and hands it to a third
party, which completes the wait with ``POST /callbacks/{token}`` and no API key. The token names the process,
its case, the event, the transition that made it and when it expires, signed with ``STAGEFLOW_SECRET_KEYS``
(its own salt, so a taskId is never a token nor the reverse). Single use: the event it delivers has an id
derived from the token's place, and the process's record refuses a repeated id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer

from framework.errors import CallbackTokenError

_SALT = "stageflow.callback.v1"
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True, slots=True)
class CallbackRef:
    """What a callback token says."""

    process_id: str
    case: str
    name: str
    transition: int
    expires_at: float

    @property
    def event_id(self) -> str:
        return f"callback:{self.transition}:{self.name}"


class CallbackTokens:
    """Signs and verifies callback tokens with the task signing keys, newest first."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        self._serializer = URLSafeSerializer(list(reversed([k for k in secret_keys if k])), salt=_SALT)

    def sign(self, ref: CallbackRef) -> str:
        return self._serializer.dumps([ref.process_id, ref.case, ref.name, ref.transition, round(ref.expires_at, 3)])

    def verify(self, token: str, *, now: float) -> CallbackRef:
        """What ``token`` says; ``CallbackTokenError`` (``expired`` set when only its time is up) otherwise."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise CallbackTokenError("callback token is missing or too long")
        try:
            fields = self._serializer.loads(token)
        except BadData:
            raise CallbackTokenError("callback token rejected: not signed by this deployment") from None
        match fields:
            case [str(p), str(c), str(n), int(t), int() | float() as e] if not isinstance(t, bool):
                ref = CallbackRef(p, c, n, t, float(e))
            case _:
                raise CallbackTokenError("callback token is signed but its content has the wrong shape")
        if now > ref.expires_at:
            raise CallbackTokenError("callback token has expired", expired=True, process_id=ref.process_id)
        return ref
