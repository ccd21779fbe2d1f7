"""The ``tls`` transport's Noise handshake is bound to its TLS session.

After the handshake the mux runs on TLS alone (no inner AEAD), so the
server must never accept a first message made for another TLS session: a
man in the middle that terminates TLS and relays the Noise bytes unchanged,
or a recorded first message replayed on a new session, is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from noisewall import socks5
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.tunnel.client import TunnelUnavailable, open_session
from noisewall.tunnel.config import build_transport
from noisewall.tunnel.server import TunnelServer
from noisewall.tunnel.transports.tls import DEFAULT_SNI, client_context, self_signed_context
from tests.tunnel.conftest import Keys, client_config, server_config, tunnel_pair

TIMEOUT = 10


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _tls_to(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(*address, ssl=client_context(), server_hostname=DEFAULT_SNI),
        TIMEOUT)


def _binding(writer: asyncio.StreamWriter) -> bytes:
    return bytes(writer.get_extra_info("ssl_object").get_channel_binding("tls-unique"))


def _first_message(keys: Keys, binding: bytes) -> bytes:
    transport = build_transport("tls")
    connection = NoiseSocketConnection(
        True, transport.client_settings(keys.client, keys.server.public))
    connection.send_handshake(binding)
    return connection.data_to_send()


async def test_a_tls_terminating_man_in_the_middle_cannot_pass_the_handshake(keys: Keys) -> None:
    async with TunnelServer(server_config(keys, "tls", [], refuse_linger=0.5)) as server:
        relayed: list[int] = []

        async def intercept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Terminate the client's TLS with our own certificate, open our own
            # TLS to the real server, and pass every decrypted byte on unchanged.
            upstream_reader, upstream_writer = await _tls_to(server.address)
            relayed.append(1)
            await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))

        mitm = await asyncio.start_server(intercept, "127.0.0.1", 0,
                                          ssl=self_signed_context(DEFAULT_SNI))
        async with mitm:
            config = client_config(keys, "tls", mitm.sockets[0].getsockname()[:2],
                                   connect_timeout=3.0)
            with pytest.raises(TunnelUnavailable):
                await open_session(config)
        assert relayed == [1]  # the handshake really went through the relay
        assert server.refused == 1 and server.sessions == 0


async def test_a_first_message_bound_to_another_tls_session_is_refused(keys: Keys) -> None:
    async with TunnelServer(server_config(keys, "tls", [], refuse_linger=0.5)) as server:
        _, earlier = await _tls_to(server.address)
        stale = _binding(earlier)
        earlier.close()

        reader, writer = await _tls_to(server.address)
        writer.write(_first_message(keys, stale))
        answer = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")  # a web server, not a tunnel
        assert server.sessions == 0

        # The same message with this session's own binding is answered in Noise.
        reader, writer = await _tls_to(server.address)
        writer.write(_first_message(keys, _binding(writer)))
        answer = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        writer.close()
        assert answer and not answer.startswith(b"HTTP/")


async def test_a_first_message_without_a_binding_is_refused(keys: Keys) -> None:
    async with TunnelServer(server_config(keys, "tls", [], refuse_linger=0.5)) as server:
        reader, writer = await _tls_to(server.address)
        writer.write(_first_message(keys, b""))
        answer = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert server.refused == 1


async def test_bulk_data_crosses_the_bound_tls_tunnel_intact(keys: Keys, echo_port: int) -> None:
    async with tunnel_pair(keys, "tls", [f"127.0.0.1:{echo_port}"]) as (server, client):
        session = await client.session()
        assert type(session.channel).__name__ == "BoundChannel"  # no second AEAD inside TLS
        payload = os.urandom(8_000_000)
        reader, writer = await asyncio.wait_for(
            socks5.open_connection(client.socks_address, "127.0.0.1", echo_port), TIMEOUT)

        async def send() -> None:
            for offset in range(0, len(payload), 300_000):  # not aligned to frames or reads
                writer.write(payload[offset : offset + 300_000])
                await writer.drain()
            writer.write_eof()

        sending = asyncio.create_task(send())
        echoed = await asyncio.wait_for(reader.read(-1), 30)
        await sending
        writer.close()
        assert echoed == payload
        assert server.sessions == 1


@pytest.mark.parametrize("honest", [True, False])
async def test_the_client_requires_the_servers_reply_to_carry_its_binding(
    keys: Keys, honest: bool
) -> None:
    settings = build_transport("tls").server_settings(keys.server)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The genuine server key, answering with this session's binding or another one.
        connection = NoiseSocketConnection(False, settings)
        while not connection.needs_write:
            connection.receive_data(await reader.read(65536))
        connection.send_handshake(_binding(writer) if honest else os.urandom(48))
        writer.write(connection.data_to_send())
        await writer.drain()
        await reader.read(65536)
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0,
                                          ssl=self_signed_context(DEFAULT_SNI))
    async with listener:
        config = client_config(keys, "tls", listener.sockets[0].getsockname()[:2],
                               connect_timeout=3.0)
        if honest:
            session = await open_session(config)
            await session.close()
        else:
            with pytest.raises(TunnelUnavailable):
                await open_session(config)
