"""Messages are parsed strictly: every bad shape is a MessageError with a reason. No server needed."""

from __future__ import annotations

import pytest

from framework import MessageError
from framework.messages import RunStage, ServiceCommand, ServiceReplyMessage


def test_run_stage_round_trip() -> None:
    message = RunStage("p", "order", "pay", 3)
    assert RunStage.parse(message.to_json()) == message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"process_id": "p", "case": "c", "stage": "s"}', "'transition' must be an integer"),
        (b'{"process_id": "p", "case": "c", "stage": "s", "transition": true}', "'transition' must be an integer"),
        (b'{"process_id": 1, "case": "c", "stage": "s", "transition": 1}', "'process_id' must be a string"),
        (b'{"process_id": "p", "case": "c", "stage": "s", "transition": 1, "pad": "' + b"x" * 2000 + b'"}',
         "over the 1024-byte limit"),
    ],
)
def test_bad_run_stage_messages(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        RunStage.parse(body, max_bytes=1024)


def test_replies_and_commands() -> None:
    ok = ServiceReplyMessage("t", ok=True, data={"a": 1})
    assert ServiceReplyMessage.parse(ok.to_json()) == ok
    error = ServiceReplyMessage("t", ok=False, error="no stock")
    assert ServiceReplyMessage.parse(error.to_json()) == error
    with pytest.raises(MessageError, match="error reply needs"):
        ServiceReplyMessage.parse(b'{"task_id": "t", "ok": false}')
    with pytest.raises(MessageError, match="'ok' must be true or false"):
        ServiceReplyMessage.parse(b'{"task_id": "t", "ok": 1}')
    command = ServiceCommand("t", "billing", {"x": [1, 2]})
    assert ServiceCommand.parse(command.to_json()) == command
