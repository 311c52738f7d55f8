"""Signed inner messages: nobody without a secret key can make a worker act.

Every message on the inner queue (``RunStage``, ``StartChild``, ``ItemDone``) is signed when the committer
publishes it and verified once, at the worker's edge (``framework.inbound``). The signature is a truncated
HMAC-SHA256 (128 bits, hex) of the exact JSON bytes, carried as the object's first key, so the message stays
JSON and nothing is canonicalised::

    {"sig":"<32 hex>","process_id":...}   signs   {"process_id":...}

One HMAC per message (about a microsecond), not itsdangerous: this runs on every transition. Keys rotate
like the taskId keys (the newest signs, all verify). Each key is first derived for this one use, so an inner
signature can never stand in for a taskId's.

Messages queued by a release that did not sign are refused and parked like any forgery. Nothing is lost:
their process still holds the message in its outbox and the due-work loop re-publishes it, signed, after
``STAGEFLOW_RELAY_GRACE_S``; a fan-out item's start or completion is sent again by the parent's sweep.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from framework.errors import ConfigurationError, MessageError

_PURPOSE = b"stageflow.inner.v1"
_PREFIX = b'{"sig":"'
_SIG_CHARS = 32  # 16 bytes of HMAC-SHA256, in hex
_PAYLOAD_AT = len(_PREFIX) + _SIG_CHARS + 2  # past the signature's closing quote and comma


class MessageSigner:
    """Signs and verifies inner messages with a list of secrets, newest first."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        keys = [k for k in secret_keys if k]
        if not keys:
            raise ConfigurationError("no secret key to sign messages", hint="set STAGEFLOW_SECRET_KEYS")
        self._keys = [hmac.digest(k.encode(), _PURPOSE, "sha256") for k in keys]

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.digest(key, payload, "sha256")[:_SIG_CHARS // 2].hex().encode()

    def sign(self, body: bytes) -> bytes:
        """``body`` (a JSON object with at least one key) with its signature as the first key."""
        if not body.startswith(b"{") or body.startswith(b"{}"):
            raise ValueError("only a non-empty JSON object can be signed")
        return _PREFIX + self._mac(self._keys[0], body) + b'",' + body[1:]

    def verify(self, body: bytes) -> bytes:
        """The signed JSON bytes of ``body``, or ``MessageError`` if no key of ours signed them."""
        if not body.startswith(_PREFIX) or body[_PAYLOAD_AT - 2:_PAYLOAD_AT] != b'",':
            raise MessageError("inner message is not signed (sent by a client without the secret key, or by a "
                               "release that did not sign: its process re-publishes it signed)")
        given = body[len(_PREFIX):len(_PREFIX) + _SIG_CHARS]
        payload = b"{" + body[_PAYLOAD_AT:]
        # Constant-time per key; stopping at the first match tells only which key signed (newest first).
        if not any(hmac.compare_digest(self._mac(key, payload), given) for key in self._keys):
            raise MessageError("inner message signature rejected: not signed by our keys, or altered")
        return payload
