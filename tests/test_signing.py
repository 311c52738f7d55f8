"""Inner-message signatures (framework/signing.py): what they refuse, key rotation, and their cost."""

from __future__ import annotations

import time

import orjson
import pytest

from framework.errors import ConfigurationError, MessageError
from framework.inbound import InboundParser
from framework.messages import ItemDone, RunStage
from framework.signing import MessageSigner
from framework.taskid import TaskIdSigner

OLD, NEW = "old-key-0123456789-0123456789-0123", "new-key-0123456789-0123456789-0123"
BODY = RunStage("p-1", "order", "pay", 3).to_json()


def test_a_signed_message_stays_json_and_verifies_to_its_exact_bytes() -> None:
    signer = MessageSigner([NEW])
    signed = signer.sign(BODY)
    assert orjson.loads(signed)["process_id"] == "p-1"  # still one JSON object
    assert signer.verify(signed) == BODY


def test_rotation_newest_signs_all_verify() -> None:
    rotated = MessageSigner([NEW, OLD])
    assert rotated.verify(MessageSigner([OLD]).sign(BODY)) == BODY  # queued before the rotation
    assert MessageSigner([NEW]).verify(rotated.sign(BODY)) == BODY  # signed with the newest
    with pytest.raises(MessageError, match="signature rejected"):
        MessageSigner([OLD]).verify(rotated.sign(BODY))


@pytest.mark.parametrize("body", [
    BODY,  # unsigned (an older release, or a client without the key)
    b'{"sig":"' + b"0" * 32 + b'",' + BODY[1:],  # a made-up signature
    MessageSigner([NEW]).sign(BODY).replace(b'"pay"', b'"refund"'),  # altered after signing
    MessageSigner([NEW]).sign(BODY)[:-1] + b',"extra":1}',  # something appended
    b'{"sig":"short",' + BODY[1:],
    b"",
])
def test_anything_not_signed_by_our_keys_is_refused(body: bytes) -> None:
    with pytest.raises(MessageError, match="inner message"):
        MessageSigner([NEW]).verify(body)


def test_a_taskid_key_never_signs_an_inner_message_for_another_use() -> None:
    # The inner key is derived for this one purpose: a raw HMAC with the secret itself is refused.
    import hashlib
    import hmac
    raw = hmac.new(NEW.encode(), BODY, hashlib.sha256).digest()[:16].hex().encode()
    with pytest.raises(MessageError, match="signature rejected"):
        MessageSigner([NEW]).verify(b'{"sig":"' + raw + b'",' + BODY[1:])


def test_the_parser_refuses_unsigned_inner_messages_and_reads_signed_ones() -> None:
    parser = InboundParser(TaskIdSigner([NEW]))
    done = ItemDone("p-1", "order", 2, 0, True, {"x": 1}).to_json()
    with pytest.raises(MessageError, match="not signed"):
        parser.inner(done)
    assert parser.inner(MessageSigner([NEW]).sign(done)) == ItemDone("p-1", "order", 2, 0, True, {"x": 1})
    with pytest.raises(MessageError, match="over the"):
        parser.inner(b"{" + b" " * (300 * 1024) + b"}")


def test_no_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        MessageSigner([])


def test_sign_and_verify_cost_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    signer = MessageSigner([NEW, OLD])
    body = ItemDone("0d7d159c-400c-48a6-b359-1a6757330dd7", "order", 2, 17, True, {"sku": "A-1" * 40}).to_json()
    rounds = 20_000
    began = time.perf_counter()
    for _ in range(rounds):
        signer.verify(signer.sign(body))
    per_us = (time.perf_counter() - began) / rounds * 1e6
    with capsys.disabled():
        print(f"\nsign+verify of a {len(body)}-byte inner message with 2 keys: {per_us:.2f} us")
    assert per_us < 50  # generous for a shared CI machine; 4-6 us on the shared 2-core machine it was written on
