"""TaskIds are signed: forged, altered or foreign ones are refused; keys rotate. No server needed."""

from __future__ import annotations

import pytest

from framework import ConfigurationError, TaskIdError, TaskIdSigner, TaskRef

REF = TaskRef(process_id="p-1", case="order", api="billing", stage="charge", transition=7)


def test_round_trip() -> None:
    signer = TaskIdSigner(["k1"])
    assert signer.verify(signer.sign(REF)) == REF


def test_the_same_command_always_carries_the_same_task_id() -> None:
    signer = TaskIdSigner(["k1"])
    assert signer.sign(REF) == signer.sign(TaskRef("p-1", "order", "billing", "charge", 7))


def test_rotation_newest_signs_all_verify() -> None:
    old = TaskIdSigner(["old"])
    rotated = TaskIdSigner(["new", "old"])
    assert rotated.verify(old.sign(REF)) == REF
    token = rotated.sign(REF)
    assert TaskIdSigner(["new"]).verify(token) == REF
    with pytest.raises(TaskIdError):
        old.verify(token)


@pytest.mark.parametrize("tamper", ["payload", "signature", "foreign", "garbage", "empty", "not-a-string", "huge"])
def test_forged_altered_and_foreign_task_ids_are_refused(tamper: str) -> None:
    signer = TaskIdSigner(["k1"])
    token = signer.sign(REF)
    payload, _, signature = token.rpartition(".")
    forged = {
        "payload": TaskIdSigner(["k1"]).sign(REF).replace(payload, payload[:-2] + "AA"),
        "signature": f"{payload}.{signature[::-1]}",
        "foreign": TaskIdSigner(["someone-else"]).sign(REF),
        "garbage": "not.a.token",
        "empty": "",
        "not-a-string": 42,
        "huge": "x" * 5000,
    }[tamper]
    with pytest.raises(TaskIdError):
        signer.verify(forged)


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="STAGEFLOW_SECRET_KEYS"):
        TaskIdSigner([])
