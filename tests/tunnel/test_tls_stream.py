"""``TlsStream``: real TLS 1.3 over loopback sockets, driven by the event loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from noisewall.tunnel.tls_stream import TlsStream
from noisewall.tunnel.transports.tls import client_context, self_signed_context

TIMEOUT = 10.0


async def _pair() -> tuple[TlsStream, TlsStream]:
    """A TLS client and server stream over one loopback connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    client_sock = socket.socket()
    client_sock.setblocking(False)
    try:
        accepting = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client_sock, listener.getsockname())
        server_sock, _ = await accepting
    finally:
        listener.close()
    server_sock.setblocking(False)
    return await asyncio.wait_for(asyncio.gather(
        TlsStream.handshake(client_sock, client_context(), server_hostname="www.example.com"),
        TlsStream.handshake(server_sock, self_signed_context("www.example.com"),
                            server_side=True)), TIMEOUT)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TlsStream, TlsStream]]:
    client, server = await _pair()
    try:
        yield client, server
    finally:
        client.abort()
        server.abort()


async def _read_exactly(stream: TlsStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        data = await asyncio.wait_for(stream.read(1 << 20), TIMEOUT)
        assert data, "end of stream before all bytes arrived"
        received += data
    return bytes(received)


async def test_bulk_data_crosses_both_ways_while_writers_outrun_readers(
        pair: tuple[TlsStream, TlsStream]) -> None:
    client, server = pair
    upload, download = os.urandom(8_000_000), os.urandom(5_000_000)

    async def send(stream: TlsStream, data: bytes) -> None:
        view = memoryview(data)
        for offset in range(0, len(data), 300_000):  # not a multiple of a TLS record
            stream.write(view[offset : offset + 300_000])
            await stream.drain()

    results = await asyncio.gather(send(client, upload), send(server, download),
                                   _read_exactly(server, len(upload)),
                                   _read_exactly(client, len(download)))
    assert results[2] == upload and results[3] == download


async def test_both_ends_see_the_same_channel_binding(pair: tuple[TlsStream, TlsStream]) -> None:
    bindings = [stream.get_extra_info("ssl_object").get_channel_binding("tls-unique")
                for stream in pair]
    assert bindings[0] and bindings[0] == bindings[1]
    other_client, other_server = await _pair()
    try:
        assert other_client.get_extra_info("ssl_object").get_channel_binding(
            "tls-unique") != bindings[0]
    finally:
        other_client.abort()
        other_server.abort()


async def _settle(client: TlsStream, server: TlsStream) -> None:
    """One exchange: the client has read the server's session tickets.

    A socket closed with unread bytes resets the connection instead of ending it.
    """
    server.write(b"ready")
    assert await _read_exactly(client, 5) == b"ready"


async def test_close_sends_what_was_written_then_the_peer_reads_the_end(
        pair: tuple[TlsStream, TlsStream]) -> None:
    client, server = pair
    await _settle(client, server)
    payload = os.urandom(3_000_000)
    client.write(payload)  # far more than the socket takes at once
    client.close()
    assert await _read_exactly(server, len(payload)) == payload
    assert await asyncio.wait_for(server.read(65536), TIMEOUT) == b""


async def test_a_bare_tcp_close_reads_as_the_end(pair: tuple[TlsStream, TlsStream]) -> None:
    client, server = pair
    await _settle(client, server)
    client.write(b"last words")
    await client.drain()
    client.abort()  # no close_notify
    assert await _read_exactly(server, 10) == b"last words"
    assert await asyncio.wait_for(server.read(65536), TIMEOUT) == b""


async def test_closing_wakes_a_waiting_reader_and_later_calls_fail(
        pair: tuple[TlsStream, TlsStream]) -> None:
    client, _ = pair
    reading = asyncio.create_task(client.read(65536))
    await asyncio.sleep(0.05)
    assert not reading.done()
    client.abort()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reading, TIMEOUT)
    with pytest.raises(ConnectionResetError):
        client.write(b"after the end")
    with pytest.raises(ConnectionResetError):
        await client.drain()


async def test_garbage_instead_of_tls_fails_the_handshake() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    with socket.create_connection(listener.getsockname()) as prober:
        server_sock, _ = await loop.sock_accept(listener)
        listener.close()
        server_sock.setblocking(False)
        prober.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(OSError):  # ssl.SSLError is an OSError
            await asyncio.wait_for(TlsStream.handshake(
                server_sock, self_signed_context("www.example.com"), server_side=True), TIMEOUT)
        assert server_sock.fileno() == -1  # the failed handshake closed it
