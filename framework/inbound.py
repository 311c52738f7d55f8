"""The edge of the worker: each delivery is parsed once, here, into a typed message.

Everything after this dispatches on the message's type (``match``); nothing re-reads bytes or branches on a
queue name. Everything is verified here too: an inner message must be signed by one of our keys
(``framework.signing``) and a ``Reply`` always carries a taskId signed by one of them. Anything that cannot
be read or verified raises ``MessageError`` (or ``TaskIdError``) with the reason the parked message keeps in
its headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.errors import MessageError
from framework.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ItemDone,
    RunStage,
    ServiceReplyMessage,
    StartChild,
    parse_inner,
)
from framework.signing import MessageSigner
from framework.taskid import TaskIdSigner, TaskRef


@dataclass(frozen=True, slots=True)
class Reply:
    """A service reply with its verified taskId."""

    message: ServiceReplyMessage
    ref: TaskRef

    @property
    def case(self) -> str:
        return self.ref.case

    @property
    def key(self) -> str:
        return "reply:" + self.message.task_id


Inbound = RunStage | StartChild | ItemDone | Reply


class InboundParser:
    def __init__(self, signer: TaskIdSigner, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._signer = signer
        self._messages = MessageSigner(signer.secret_keys)
        self._max_bytes = max_message_bytes

    def inner(self, body: bytes) -> Inbound:
        """A delivery from the inner queue, its signature verified."""
        if len(body) > self._max_bytes:  # checked before hashing: an oversize body costs nothing
            raise MessageError(f"message of {len(body)} bytes is over the {self._max_bytes}-byte limit")
        return parse_inner(self._messages.verify(body), self._max_bytes)

    def reply(self, body: bytes) -> Inbound:
        """A delivery from the service queue, its taskId verified."""
        message = ServiceReplyMessage.parse(body, self._max_bytes)
        return Reply(message, self._signer.verify(message.task_id))
