"""The HTTP adapter's transport: resolve a host once, check every address, connect to a checked one.

Checking a URL's host and then letting the HTTP client resolve it again leaves a window (DNS rebinding: the
first answer is public, the second is 127.0.0.1). So the check lives in the network backend, the one place
that opens connections: it resolves the name, refuses the connection if *any* address is refused by the
``AddressPolicy``, and connects to one of those very addresses (never to the name). TLS still verifies the
certificate against the URL's host name (httpcore passes it as the server name), and pooled connections are
keyed by that name, so a kept-alive connection is one that was checked when it was opened.

Built on httpcore's public pool and backend interfaces; exceptions are mapped to httpx's own, by name, as
httpx's default transport does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from framework.http.policy import AddressPolicy, RequestRefused

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the resolver's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} took over {timeout} s") from None
        except OSError as exc:  # a name that does not resolve (now): the call may be retried
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        refused = [reason for address in addresses if (reason := self._policy.refusal(address))]
        if refused or not addresses:
            raise RequestRefused(
                f"refused to connect to {host!r}: {refused[0] if refused else 'it resolves to no address'}",
                hint="an operator may allow a network with STAGEFLOW_HTTP_ALLOW_NETWORKS where the adapter runs",
            )
        error: Exception = httpcore.ConnectError(f"cannot connect to {host!r}")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # try the next address of the name, like the system's own connect would
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RequestRefused("the http adapter does not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TimeoutException)(str(exc), request=request) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError) as exc:
        mapped = getattr(httpx, type(exc).__name__, httpx.TransportError)
        raise (mapped if issubclass(mapped, httpx.TransportError) else httpx.TransportError)(
            str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to addresses ``policy`` allows (see the module docstring).

    ``resolver`` (host, port) -> addresses: the system's by default; tests give their own to play a rebinding
    name server.
    """

    def __init__(
        self, policy: AddressPolicy, *, max_connections: int = 100, resolver: Resolver | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
            network_backend=_GuardedBackend(policy, resolver or system_resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )
        with _httpx_errors(request):
            response = await self._pool.handle_async_request(core)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response.stream, request), extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()
