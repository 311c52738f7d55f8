"""Where the HTTP adapter may send a request: the addresses it may connect to, and the hosts a request or a
secret is limited to.

Loopback, link-local (cloud metadata at 169.254.169.254 among them), unspecified ("this host") and multicast
addresses are refused unless the adapter's operator allows them (``STAGEFLOW_HTTP_ALLOW_NETWORKS``): a request
built from a template and process input must not reach the adapter's own machine. The check is made on every
address a name resolves to, by the transport, right before it connects (``framework/http/transport.py``).

Host lists (an API definition's ``allowed_hosts``, a secret's hosts in ``STAGEFLOW_HTTP_HOSTS_BY_SECRET``) hold
names (``api.example.com``), wildcards for subdomains (``*.example.com``: not the name itself) or IP literals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from framework.errors import ConfigurationError, ServiceError

Network = IPv4Network | IPv6Network
_THIS_NETWORK = ip_network("0.0.0.0/8")  # Linux connects 0.x.y.z to the local host
_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9_.:-]{1,253}$")


class RequestRefused(ServiceError):
    """A request the adapter's policy forbids (an address, a host): final, and nothing is sent."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The addresses the adapter refuses, less the networks its operator allows."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> AddressPolicy:
        """From addresses or CIDR networks (``127.0.0.1``, ``10.1.0.0/16``, ``::1``)."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ip_network(text.strip(), strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"{text!r} is not an IP address or network",
                    hint="STAGEFLOW_HTTP_ALLOW_NETWORKS takes addresses or CIDR networks, comma-separated",
                ) from None
        return cls(tuple(parsed))

    def refusal(self, address: str) -> str | None:
        """Why the adapter must not connect to ``address`` (an IP literal), or None if it may."""
        ip: IPv4Address | IPv6Address = ip_address(address.split("%", 1)[0])  # an IPv6 zone id is no part of it
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allow if network.version == ip.version):
            return None
        if ip.is_loopback:
            kind = "loopback"
        elif ip.is_link_local:
            kind = "link-local"
        elif ip.is_unspecified or (isinstance(ip, IPv4Address) and ip in _THIS_NETWORK):
            kind = "unspecified"
        elif ip.is_multicast:
            kind = "multicast"
        else:
            return None
        return f"{ip} is a {kind} address"


def check_host_patterns(patterns: Sequence[str], where: str) -> tuple[str, ...]:
    """Host patterns, lowercased; a bad one is a ``ConfigurationError`` naming ``where`` it came from."""
    checked = []
    for pattern in patterns:
        text = pattern.strip().lower().removeprefix("[").removesuffix("]") if isinstance(pattern, str) else ""
        if not _HOST_PATTERN.match(text):
            raise ConfigurationError(f"{where}: {pattern!r} is not a host name, '*.domain' or an IP address")
        checked.append(text)
    return tuple(checked)


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` (a URL's host, without brackets) matches one of ``patterns``."""
    name = host.lower().rstrip(".")
    return any(name.endswith(p[1:]) if p.startswith("*.") else name == p for p in patterns)
