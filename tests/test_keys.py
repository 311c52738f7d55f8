"""Secret keys and gateway API keys: too short, or the published demo key, is refused at start."""

from __future__ import annotations

import pytest

from framework import ConfigurationError, Settings
from framework.settings import DEMO_SECRET_KEY
from gateway.auth import ApiKeys

STRONG = "k" * 32
RABBIT = {"broker_url": "amqp://guest:guest@127.0.0.1:5672/"}


@pytest.mark.parametrize("keys", [["a"], [STRONG, "short-old-key"], ["x" * 31]])
def test_secret_keys_shorter_than_32_bytes_are_refused_with_how_to_make_one(keys: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes") as refused:
        Settings(secret_keys=keys, **RABBIT).signing_keys()
    assert "secrets.token_urlsafe(32)" in str(refused.value)


def test_the_demo_key_is_refused_outside_the_embedded_mode() -> None:
    with pytest.raises(ConfigurationError, match="published demo key"):
        Settings(secret_keys=[DEMO_SECRET_KEY], **RABBIT).signing_keys()
    assert Settings(secret_keys=[DEMO_SECRET_KEY]).signing_keys() == [DEMO_SECRET_KEY]  # embedded: fine
    assert Settings().signing_keys() == [DEMO_SECRET_KEY]  # embedded, nothing set: the built-in key
    assert Settings(secret_keys=[STRONG, "y" * 40], **RABBIT).signing_keys() == [STRONG, "y" * 40]


@pytest.mark.parametrize("field", ["api_keys_read", "api_keys_operate"])
def test_gateway_api_keys_shorter_than_32_bytes_or_the_demo_key_are_refused(field: str) -> None:
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
        ApiKeys.from_settings(Settings(**{field: ["operator"]}))
    with pytest.raises(ConfigurationError, match="published demo key"):
        ApiKeys.from_settings(Settings(**{field: [DEMO_SECRET_KEY]}))
    ApiKeys.from_settings(Settings(**{field: [STRONG]}))
