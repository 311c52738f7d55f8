"""API keys in the ``X-API-Key`` header: read keys may read, operate keys may also start processes and act.

Keys come from ``STAGEFLOW_API_KEYS_READ`` and ``STAGEFLOW_API_KEYS_OPERATE`` (comma-separated) and are
compared in constant time. With no key configured the gateway refuses to start, unless
``STAGEFLOW_GATEWAY_INSECURE=true`` says that an open gateway is intended (local use).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from enum import IntEnum

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from framework.errors import ConfigurationError
from framework.settings import Settings, strong_keys

HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=HEADER, auto_error=False, description="a read or operate API key")


class Role(IntEnum):
    NONE = 0
    READ = 1
    OPERATE = 2  # implies READ


class ApiKeys:
    def __init__(self, *, read: list[str], operate: list[str], insecure: bool = False) -> None:
        self._keys = [(key.encode(), Role.OPERATE) for key in operate] + [(key.encode(), Role.READ) for key in read]
        self.open = insecure and not self._keys

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        if not (settings.api_keys_read or settings.api_keys_operate or settings.gateway_insecure):
            raise ConfigurationError(
                "the gateway has no API keys, so it would accept anyone",
                hint="set STAGEFLOW_API_KEYS_OPERATE (and STAGEFLOW_API_KEYS_READ), comma-separated random keys; "
                "or set STAGEFLOW_GATEWAY_INSECURE=true to run it open on purpose (local use only)",
            )
        return cls(read=strong_keys(settings.api_keys_read, "STAGEFLOW_API_KEYS_READ"),
                   operate=strong_keys(settings.api_keys_operate, "STAGEFLOW_API_KEYS_OPERATE"),
                   insecure=settings.gateway_insecure)

    def role_of(self, presented: str | None) -> Role:
        if self.open:
            return Role.OPERATE
        if not presented:
            return Role.NONE
        candidate = presented.encode()
        role = Role.NONE
        for key, key_role in self._keys:  # compare with every key: the time does not say which one matched
            if hmac.compare_digest(candidate, key) and key_role > role:
                role = key_role
        return role

    def require(self, needed: Role) -> Callable[[str | None], Awaitable[Role]]:
        """A FastAPI dependency that lets the request through only with a key of role ``needed`` or more."""

        async def check(api_key: str | None = Security(api_key_header)) -> Role:
            role = self.role_of(api_key)
            if role == Role.NONE:
                detail = f"missing {HEADER} header" if not api_key else f"unknown key in {HEADER}"
                raise HTTPException(401, detail, headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'})
            if role < needed:
                raise HTTPException(403, "this API key may only read; this action needs an operate key")
            return role

        return check
