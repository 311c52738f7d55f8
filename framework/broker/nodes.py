"""The nodes of one RabbitMQ cluster, from ``STAGEFLOW_BROKER_URL`` (comma-separated ``amqp://`` URLs).

aio-pika's robust connection reconnects to the one URL it was given. The nodes of a cluster differ only in
their address (users, vhosts and queues are the cluster's), so the connection keeps the first URL for its
credentials, vhost and options, and the transport (``framework/broker/transport.py``) picks the address:
each new connection tries the nodes in turn, starting after the one it last used, so losing a node moves
every client to a live one at its first reconnect instead of waiting for that node to return.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from framework.errors import ConfigurationError

_T = TypeVar("_T")
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class BrokerNodes:
    url: str  # the first node's URL: credentials, vhost and options shared by all nodes
    addresses: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, value: str) -> BrokerNodes:
        urls = [part.strip() for part in value.split(",") if part.strip()]
        if not urls:
            raise ConfigurationError("STAGEFLOW_BROKER_URL is empty", hint="use amqp://user:pass@host:5672/vhost")
        addresses: list[tuple[str, int]] = []
        shared: tuple[str, str | None, str | None, str, str] | None = None
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
                raise ConfigurationError(
                    f"not an AMQP node URL: {_safe(url)!r}",
                    hint="list the cluster's nodes as amqp://user:pass@host:5672/vhost, comma-separated",
                )
            try:
                port = parts.port or _DEFAULT_PORTS[parts.scheme]
            except ValueError as exc:
                raise ConfigurationError(f"bad port in the broker URL {_safe(url)!r}: {exc}") from exc
            same = (parts.scheme, parts.username, parts.password, parts.path or "/", parts.query)
            if shared is not None and same != shared:
                raise ConfigurationError(
                    f"the broker URL {_safe(url)!r} differs from the first one in more than its host and port",
                    hint="the nodes of one cluster share the scheme, user, password, vhost and options",
                )
            shared = same
            if (parts.hostname, port) in addresses:
                raise ConfigurationError(f"the broker node {parts.hostname}:{port} is listed twice")
            addresses.append((parts.hostname, port))
        return cls(url=urls[0], addresses=tuple(addresses))


def _safe(url: str) -> str:
    """A URL for an error message: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":******@", 1)


class NodeRotation:
    """Which node each new connection tries first: the one after the node the last connection used."""

    def __init__(self, addresses: tuple[tuple[str, int], ...], connect_timeout_s: float = 5.0) -> None:
        self.addresses = addresses
        self.connect_timeout_s = connect_timeout_s  # per node: an unreachable host must not stall the others
        self.current: tuple[str, int] | None = None
        self._next = 0

    def order(self) -> list[tuple[str, int]]:
        start = self._next % len(self.addresses)
        return [*self.addresses[start:], *self.addresses[:start]]

    def connected(self, address: tuple[str, int]) -> None:
        self.current = address
        self._next = self.addresses.index(address) + 1

    async def first_reachable(self, open_one: Callable[[str, int], Awaitable[_T]]) -> _T:
        """``open_one(host, port)`` on each node in turn; the first that opens (OSError and timeouts go on)."""
        errors: list[str] = []
        for host, port in self.order():
            try:
                opened = await asyncio.wait_for(open_one(host, port), self.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
                continue
            self.connected((host, port))
            return opened
        self._next += 1  # all failed: the next attempt starts elsewhere
        raise OSError(f"no RabbitMQ node reachable ({'; '.join(errors)})")
