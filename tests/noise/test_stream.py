"""The asyncio adapter over real loopback sockets: echo, hostile clients, fallback, limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable

import pytest

from noisewall.noise.connection import NoiseConnection
from noisewall.noise.dh import DH_FUNCTIONS, KeyPair
from noisewall.noise.errors import (
    ConnectionClosedError,
    MessageTooLongError,
    RejectedError,
)
from noisewall.noise.events import Event, MessageReceived, PeerClosed
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.stream import Framing, NoiseServer, NoiseStream, connect, make_connection
from noisewall.records.endpoint import Endpoint

HOST = "127.0.0.1"
X25519 = DH_FUNCTIONS["25519"]
XX = "Noise_XX_25519_AESGCM_SHA256"
IK = "Noise_IK_25519_AESGCM_SHA256"
XX_FALLBACK = "Noise_XXfallback_25519_AESGCM_SHA256"
FRAMINGS: list[Framing] = ["noisesocket", "wa"]
HANDSHAKE_TIMEOUT = 1.5
#: A hostile client that breaks the protocol must lose its connection well before
#: the handshake timeout would have closed it anyway.
PROMPT = HANDSHAKE_TIMEOUT * 2 / 3
TEST_TIMEOUT = 20.0


# --- helpers ---------------------------------------------------------------


def keypair() -> KeyPair:
    return X25519.generate_keypair()


async def echo(stream: NoiseStream) -> None:
    async for message in stream:
        await stream.send(message)


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; return the bytes and the time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    received = bytearray()
    async with asyncio.timeout(limit):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received), loop.time() - start


async def raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def send_quietly(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write, ignoring a reset: the server may hang up before reading everything."""
    with contextlib.suppress(OSError):
        writer.write(data)
        await writer.drain()


def transport_frame(framing: Framing, body: bytes) -> bytes:
    """A well-formed frame of the given framing around arbitrary bytes."""
    size = 2 if framing == "noisesocket" else 3
    return len(body).to_bytes(size, "big") + body


def client_settings(server: KeyPair, protocol: str = IK) -> NoiseSettings:
    return NoiseSettings(protocol=protocol, static=keypair(), remote_static=server.public)


# --- echo round trips ----------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("protocol", [XX, IK])
async def test_echo_round_trip(framing: Framing, protocol: str) -> None:
    server_key = keypair()
    settings = NoiseSettings(protocol=protocol, static=server_key)
    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(echo, Endpoint(HOST, 0), settings, framing=framing,
                             handshake_timeout=5)
        async with server:
            client = await connect(
                HOST, server.address.port, client_settings(server_key, protocol), framing=framing,
                timeout=5,
            )
            async with client:
                assert client.remote_static == server_key.public
                assert client.protocol_name == protocol
                largest = client.max_message_size
                assert largest == client.connection.max_body
                messages = [b"", b"hello", b"\x00\x01", b"", os.urandom(largest)]
                for message in messages:
                    await client.send(message)
                    assert await client.receive(timeout=5) == message
                small = [b"", b"a", b"", bytes(100), b"z" * 3000]
                for message in small:  # pipelined: all sent before any is read
                    await client.send(message)
                for message in small:
                    assert await client.receive(timeout=5) == message
                await client.write_eof()
                with pytest.raises(ConnectionClosedError):  # the echo ends with our EOF
                    await client.receive(timeout=5)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_message_is_one_plain_transport_body(framing: Framing) -> None:
    """What ``send`` writes is the framing's transport body and nothing of noisewall's own."""
    server_key = keypair()
    peer = make_connection(framing, True, client_settings(server_key, XX))
    settings = NoiseSettings(protocol=XX, static=server_key)
    messages = [b"", b"\x00", b"\x01more", b"\x02", bytes(range(256)) * 10]

    async def send_all(stream: NoiseStream) -> None:
        for message in messages:
            await stream.send(message)
        await stream.write_eof()

    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(send_all, Endpoint(HOST, 0), settings, framing=framing)
        async with server:
            reader, writer = await raw_client(server.address.port)
            try:
                peer.send_handshake()
                writer.write(peer.data_to_send())
                events: list[Event] = []
                while True:
                    data = await reader.read(65536)
                    events += peer.receive_data(data)
                    if peer.needs_write:
                        peer.send_handshake()
                    writer.write(peer.data_to_send())
                    if not data:
                        break
            finally:
                await close_writer(writer)
    bodies = [event.body for event in events if isinstance(event, MessageReceived)]
    assert bodies == messages
    assert isinstance(events[-1], PeerClosed)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_message_larger_than_one_body_is_refused_before_writing(
    framing: Framing,
) -> None:
    server_key = keypair()
    settings = NoiseSettings(protocol=XX, static=server_key)
    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(echo, Endpoint(HOST, 0), settings, framing=framing)
        async with server:
            client = await connect(
                HOST, server.address.port, client_settings(server_key, XX), framing=framing
            )
            async with client:
                with pytest.raises(MessageTooLongError):
                    await client.send(bytes(client.max_message_size + 1))
                send = client.connection.transport.send
                assert send is not None and send.n == 0
                await client.send(b"still usable")
                assert await client.receive(timeout=5) == b"still usable"


# --- hostile clients --------------------------------------------------------------


async def garbage_client(port: int, framing: Framing) -> tuple[bytes, float]:
    """(a) Random bytes, enough to complete any first frame the parser might wait for."""
    rng = random.Random(1234)
    reader, writer = await raw_client(port)
    try:
        await send_quietly(writer, b"\x16\x03\x01" + rng.randbytes(140_000))
        return await read_until_closed(reader, TEST_TIMEOUT)
    finally:
        await close_writer(writer)


async def opening(framing: Framing, settings: NoiseSettings) -> tuple[NoiseConnection, bytes]:
    connection = make_connection(framing, True, settings)
    connection.send_handshake(b"first")
    return connection, connection.data_to_send()


async def valid_then_garbage_client(
    port: int, framing: Framing, server: KeyPair
) -> tuple[bytes, float]:
    """(b) A genuine IK handshake, then a well-framed transport message of random bytes."""
    connection, first = await opening(framing, client_settings(server))
    reader, writer = await raw_client(port)
    try:
        await send_quietly(writer, first)
        while not connection.handshake_complete:
            data = await reader.read(65536)
            assert data, "the server closed before answering a valid first message"
            connection.receive_data(data)
        start = asyncio.get_running_loop().time()
        await send_quietly(writer, transport_frame(framing, random.Random(5).randbytes(64)))
        received, _ = await read_until_closed(reader, TEST_TIMEOUT)
        return received, asyncio.get_running_loop().time() - start
    finally:
        await close_writer(writer)


async def truncated_client(port: int, framing: Framing, server: KeyPair) -> tuple[bytes, float]:
    """(c) Most of a valid first frame, then end of stream."""
    _, first = await opening(framing, client_settings(server))
    reader, writer = await raw_client(port)
    try:
        await send_quietly(writer, first[:-5])
        writer.write_eof()
        return await read_until_closed(reader, TEST_TIMEOUT)
    finally:
        await close_writer(writer)


async def wrong_key_client(port: int, framing: Framing) -> tuple[bytes, float]:
    """(d) An IK first message encrypted to a key that is not the server's."""
    _, first = await opening(framing, client_settings(keypair()))
    reader, writer = await raw_client(port)
    try:
        await send_quietly(writer, first)
        return await read_until_closed(reader, TEST_TIMEOUT)
    finally:
        await close_writer(writer)


async def silent_client(port: int) -> tuple[bytes, float]:
    """(e) Connects and sends nothing."""
    reader, writer = await raw_client(port)
    try:
        return await read_until_closed(reader, HANDSHAKE_TIMEOUT + TEST_TIMEOUT / 2)
    finally:
        await close_writer(writer)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_hostile_clients_do_not_disturb_good_ones(framing: Framing) -> None:
    server_key = keypair()
    settings = NoiseSettings(protocol=IK, static=server_key)
    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(
            echo, Endpoint(HOST, 0), settings, framing=framing, handshake_timeout=HANDSHAKE_TIMEOUT
        )
        async with server:
            good = await connect(HOST, server.address.port, client_settings(server_key),
                                 framing=framing)
            await good.send(b"before")
            assert await good.receive(timeout=5) == b"before"
            await good.send(b"in flight")  # mid-conversation: the echo waits unread

            port = server.address.port
            garbage, valid_garbage, truncated, wrong_key, silent = await asyncio.gather(
                garbage_client(port, framing),
                valid_then_garbage_client(port, framing, server_key),
                truncated_client(port, framing, server_key),
                wrong_key_client(port, framing),
                silent_client(port),
            )
            for name, (_, elapsed) in {
                "garbage": garbage,
                "valid frame then garbage": valid_garbage,
                "truncated frame": truncated,
                "wrong static key": wrong_key,
            }.items():
                assert elapsed < PROMPT, f"{name}: closed after {elapsed:.2f} s"
            assert wrong_key[0] == b""  # a silent reject: nothing at all was sent back
            assert truncated[0] == b""
            silent_data, silent_elapsed = silent
            assert silent_data == b""
            assert HANDSHAKE_TIMEOUT * 0.9 <= silent_elapsed < HANDSHAKE_TIMEOUT + 5

            # Every hostile connection is gone; the good one still works.
            assert server.connections == 1
            assert await good.receive(timeout=5) == b"in flight"
            await good.send(b"after")
            assert await good.receive(timeout=5) == b"after"
            another = await connect(HOST, server.address.port, client_settings(server_key),
                                    framing=framing)
            async with another:
                await another.send(b"newcomer")
                assert await another.receive(timeout=5) == b"newcomer"
                assert server.connections == 2
            await good.send(b"still here")
            assert await good.receive(timeout=5) == b"still here"
            await good.close()


async def test_rejected_client_gets_the_reason() -> None:
    server_key = keypair()
    settings = NoiseSettings(protocol=XX, static=server_key)
    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(echo, Endpoint(HOST, 0), settings, handshake_timeout=HANDSHAKE_TIMEOUT)
        async with server:
            with pytest.raises(RejectedError) as info:
                await connect(HOST, server.address.port, client_settings(server_key, IK), timeout=5)
            assert IK in info.value.reason
            # The server is fine afterwards.
            async with await connect(
                HOST, server.address.port, client_settings(server_key, XX), timeout=5
            ) as client:
                await client.send(b"x")
                assert await client.receive(timeout=5) == b"x"


# --- Noise Pipes over sockets ---------------------------------------------------------


@pytest.mark.parametrize("stale", [True, False])
async def test_ik_falls_back_to_xx_with_a_stale_key(stale: bool) -> None:
    server_key = keypair()
    seen: list[tuple[str | None, bytes | None, bytes]] = []

    async def handler(stream: NoiseStream) -> None:
        seen.append((stream.protocol_name, stream.remote_static, stream.handshake_hash))
        await echo(stream)

    server_settings = NoiseSettings(protocol=IK, static=server_key, fallbacks={IK: XX_FALLBACK})
    client_static = keypair()
    remote = keypair().public if stale else server_key.public
    settings = NoiseSettings(
        protocol=IK, static=client_static, remote_static=remote, accept=[XX_FALLBACK]
    )
    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(handler, Endpoint(HOST, 0), server_settings, handshake_timeout=5)
        async with server, await connect(HOST, server.address.port, settings,
                                         payload=b"0-RTT") as client:
            expected = XX_FALLBACK if stale else IK
            assert client.protocol_name == expected
            assert client.remote_static == server_key.public
            await client.send(b"through the pipe")
            assert await client.receive(timeout=5) == b"through the pipe"
            assert seen == [(expected, client_static.public, client.handshake_hash)]


# --- why a connection ended --------------------------------------------------------


async def handshake_then(
    port: int, server: KeyPair, frame: bytes | Callable[[NoiseConnection], bytes] | None
) -> None:
    """A client that completes an XX handshake, then sends ``frame`` raw (None: just a FIN)."""
    connection = make_connection("noisesocket", True, client_settings(server, XX))
    reader, writer = await raw_client(port)
    try:
        connection.send_handshake()
        await send_quietly(writer, connection.data_to_send())
        while not connection.handshake_complete:
            data = await reader.read(65536)
            assert data, "the server closed during the handshake"
            connection.receive_data(data)
            if connection.needs_write:
                connection.send_handshake()
            await send_quietly(writer, connection.data_to_send())
        if frame is None:
            writer.write_eof()
        else:
            await send_quietly(writer, frame(connection) if callable(frame) else frame)
        await read_until_closed(reader, TEST_TIMEOUT)
    finally:
        await close_writer(writer)


def bad_body_len(connection: NoiseConnection) -> bytes:
    """A well-encrypted payload whose body_len claims more bytes than follow."""
    send = connection.transport.send
    assert send is not None
    return transport_frame("noisesocket", send.encrypt(b"\xff\xffshort"))


async def test_the_server_says_why_each_connection_ended() -> None:
    server_key = keypair()
    reasons: list[str] = []
    settings = NoiseSettings(protocol=XX, static=server_key)

    def on_close(peer: object, reason: str) -> None:
        assert isinstance(peer, tuple)
        reasons.append(reason)

    async with asyncio.timeout(TEST_TIMEOUT):
        server = NoiseServer(echo, Endpoint(HOST, 0), settings, on_close=on_close,
                             handshake_timeout=HANDSHAKE_TIMEOUT)
        async with server:
            reader, writer = await raw_client(server.address.port)
            not_a_protocol = transport_frame("noisesocket", b"not a protocol") + b"\x00\x00"
            await send_quietly(writer, not_a_protocol)
            await read_until_closed(reader, TEST_TIMEOUT)
            await close_writer(writer)
            await handshake_then(server.address.port, server_key, transport_frame(
                "noisesocket", os.urandom(40)))
            await handshake_then(server.address.port, server_key, bad_body_len)
            await handshake_then(server.address.port, server_key, None)
            for _ in range(100):
                if len(reasons) == 4:
                    break
                await asyncio.sleep(0.02)
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith("handshake failed: ")
    assert reasons[1].startswith("decrypt failed: DecryptError")
    assert reasons[2].startswith("malformed body: FramingError: body_len")
    assert reasons[3] == "the peer closed the connection"
