"""The edge of the worker: each delivery is parsed once, here, into a typed message.

Everything after this dispatches on the message's type (``match``); nothing re-reads bytes or branches on a
queue name. A service reply is verified here too: a ``Reply`` always carries a taskId signed by one of our
keys. Anything that cannot be read raises ``MessageError`` (or ``TaskIdError``) with the reason the parked
message keeps in its headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ItemDone,
    RunStage,
    ServiceReplyMessage,
    StartChild,
    parse_inner,
)
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
        self._max_bytes = max_message_bytes

    def inner(self, body: bytes) -> Inbound:
        """A delivery from the inner queue."""
        return parse_inner(body, self._max_bytes)

    def reply(self, body: bytes) -> Inbound:
        """A delivery from the service queue, its taskId verified."""
        message = ServiceReplyMessage.parse(body, self._max_bytes)
        return Reply(message, self._signer.verify(message.task_id))
