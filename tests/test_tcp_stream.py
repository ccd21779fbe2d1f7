"""``TcpStream`` (the byte stream under the tunnel, on real loopback sockets) and the allocator."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from noisewall.allocator import tune_allocator
from noisewall.tcp_stream import TcpStream

TIMEOUT = 10


@pytest.fixture
async def accepted() -> AsyncIterator[tuple[int, asyncio.Queue[TcpStream]]]:
    """A listening port whose accepted connections (``TcpStream`` with a 64 KiB limit) queue up."""
    queue: asyncio.Queue[TcpStream] = asyncio.Queue()

    def make() -> TcpStream:
        return TcpStream(queue.put_nowait, limit=65536)

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), queue
    finally:
        server.close()
        await server.wait_closed()


async def _read_all(stream: TcpStream) -> bytes:
    received = bytearray()
    while data := await asyncio.wait_for(stream.read(100_000), TIMEOUT):
        received += data
    return bytes(received)


async def test_a_half_closed_connection_still_carries_the_answer(
    accepted: tuple[int, asyncio.Queue[TcpStream]],
) -> None:
    port, queue = accepted
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    server_side = await asyncio.wait_for(queue.get(), TIMEOUT)
    writer.write(b"question")
    writer.write_eof()
    assert await _read_all(server_side) == b"question"
    server_side.write(b"answer")
    await server_side.drain()
    server_side.write_eof()
    assert await asyncio.wait_for(reader.read(-1), TIMEOUT) == b"answer"
    writer.close()
    server_side.close()


async def test_bulk_data_beyond_the_read_limit_arrives_intact(
    accepted: tuple[int, asyncio.Queue[TcpStream]],
) -> None:
    port, queue = accepted
    payload = os.urandom(6_000_000)  # ~90 times the limit: reading pauses and resumes
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    server_side = await asyncio.wait_for(queue.get(), TIMEOUT)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send())
    assert await _read_all(server_side) == payload
    await sending
    writer.close()
    server_side.close()


async def test_a_reset_is_an_error_not_an_end_of_stream(
    accepted: tuple[int, asyncio.Queue[TcpStream]],
) -> None:
    port, queue = accepted
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    server_side = await asyncio.wait_for(queue.get(), TIMEOUT)
    raw.sendall(b"partial")
    assert await asyncio.wait_for(server_side.read(100), TIMEOUT) == b"partial"
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # linger 0: the peer gets a RST
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(server_side.read(100), TIMEOUT)
    server_side.close()


def test_the_allocator_is_tuned_where_glibc_offers_mallopt() -> None:
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
