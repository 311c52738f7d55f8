"""The coalescing transport under aiormq: the frames written in one event-loop pass reach the socket in one
write, in order; drain() and close() send what is pending at once, so nothing is held back or lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from framework.broker.transport import CoalescingTransportFactory


class _Server:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []  # each read() the server made
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.chunks.append(chunk)
        self.closed.set()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[_Server, URL]]:
    state = _Server()
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state, URL(f"amqp://127.0.0.1:{port}/")


async def test_frames_of_one_pass_leave_in_one_write_and_in_order(server: tuple[_Server, URL]) -> None:
    state, url = server
    _, writer = await CoalescingTransportFactory().create(url)
    for frame in (b"one;", b"two;", b"three;"):
        writer.write(frame)
    assert state.chunks == []  # nothing sent before the pass ends
    await asyncio.sleep(0.05)
    assert state.chunks == [b"one;two;three;"]
    writer.close()
    await asyncio.wait_for(state.closed.wait(), 5)


async def test_drain_and_close_send_what_is_pending_at_once(server: tuple[_Server, URL]) -> None:
    state, url = server
    _, writer = await CoalescingTransportFactory().create(url)
    writer.write(b"handshake")
    await writer.drain()  # aiormq drains after its handshake and its RPC frames: they must not wait
    writer.write(b";last words")
    writer.close()  # e.g. Connection.Close then close: the frame must still go out
    await asyncio.wait_for(state.closed.wait(), 5)
    assert b"".join(state.chunks) == b"handshake;last words"


async def test_an_unreachable_broker_is_aiormqs_connection_error() -> None:
    from aiormq.exceptions import AMQPConnectionError

    with pytest.raises(AMQPConnectionError):
        await CoalescingTransportFactory().create(URL("amqp://127.0.0.1:1/"))
