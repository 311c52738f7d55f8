"""A TCP transport for aiormq that sends the frames of one event-loop pass in one socket write.

aiormq's writer task writes each AMQP frame to the socket as it comes (with TCP_NODELAY: one ``send`` and
one TCP segment per publish or ack). Under load a worker produces dozens of frames per loop pass, so the
syscalls, and the broker's reads of as many tiny segments, were the largest single item of a worker's
profile. This writer keeps the frames of a pass and sends them together at the end of it (``call_soon``),
so nothing waits longer than the pass that wrote it; ``drain``, ``write_eof`` and ``close`` send at once.

aiormq takes a ``TransportFactory``; aio-pika does not pass one through, hence ``CoalescingConnection``. The
factory also picks the node of a cluster each (re)connection goes to (``framework/broker/nodes.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from framework.broker.nodes import NodeRotation

_READ_LIMIT = 2**16  # asyncio's default StreamReader limit


class _CoalescingWriter(asyncio.StreamWriter):
    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._event_loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._event_loop.call_soon(self._send_pending)
        self._pending.append(bytes(data))

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def _send_pending(self) -> None:
        if not self._pending:
            return  # drain() or close() sent them already
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            super().write(data)

    async def drain(self) -> None:
        self._send_pending()
        await super().drain()

    def write_eof(self) -> None:
        self._send_pending()
        super().write_eof()

    def close(self) -> None:
        self._send_pending()
        super().close()


class CoalescingTransportFactory(TransportFactory):
    """``asyncio.open_connection`` (as its docs invite copying it), with the coalescing writer; to the URL's host,
    or, given the nodes of a cluster, to the first reachable one of them."""

    def __init__(self, nodes: NodeRotation | None = None) -> None:
        self.nodes = nodes

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ssl_context_provider = kwargs.pop("ssl_context_provider", None)
        ssl = await ssl_context_provider.get_context() if url.scheme == "amqps" and ssl_context_provider else None
        if url.host is None or url.port is None:  # aiormq fills in the scheme's port; an AMQP URL names a host
            raise AMQPConnectionError(f"no host and port in the broker URL {url.with_password(None)}")
        loop = asyncio.get_running_loop()

        async def open_one(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.create_connection(lambda: protocol, host, port, ssl=ssl, **kwargs)
            return reader, _CoalescingWriter(transport, protocol, reader, loop)

        try:
            if self.nodes is None:
                return await open_one(url.host, url.port)
            return await self.nodes.first_reachable(open_one)
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc


class CoalescingConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection (reconnects, restores channels) over the coalescing transport; ``nodes``
    makes each reconnect go to a reachable node of the cluster."""

    def __init__(self, *args: Any, nodes: NodeRotation | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aio-pika keeps the keyword arguments it hands to aiormq on every (re)connect here.
        self.kwargs["transport_factory"] = CoalescingTransportFactory(nodes)
