"""The tunnel server and client on loopback: data, refusals, probes, garbage, replays."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from noisewall import socks5
from noisewall.censor.classify import fully_encrypted
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import TRANSPORT_NAMES
from noisewall.tunnel.client import TunnelClient, TunnelUnavailable, open_session
from noisewall.tunnel.config import (
    TunnelConfigError,
    TunnelServerConfig,
    build_transport,
    parse_destination,
)
from noisewall.tunnel.server import TunnelServer
from noisewall.tunnel.transports.tls import COVER_PAGE, self_signed_context
from tests.tunnel.conftest import Keys, client_config, server_config, tunnel_pair

TIMEOUT = 10


@pytest.fixture(params=TRANSPORT_NAMES)
def transport(request: pytest.FixtureRequest) -> str:
    """Each transport in turn."""
    return str(request.param)


def _echo_pair(keys: Keys, transport: str, echo_port: int,
               **server_extra: Any) -> AbstractAsyncContextManager[tuple[TunnelServer,
                                                                         TunnelClient]]:
    """A tunnel pair whose server lets clients reach only the echo destination."""
    return tunnel_pair(keys, transport, [f"127.0.0.1:{echo_port}"], **server_extra)

async def _echo_through(socks: tuple[str, int], port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(
        socks5.open_connection(Endpoint(*socks), "127.0.0.1", port), TIMEOUT)
    writer.write(payload)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(-1), TIMEOUT)
    writer.close()
    return data


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
            received += chunk
    except ConnectionError:  # reset, or a broken pipe from our own last write
        pass
    return received


async def test_streams_carry_data_both_ways(keys: Keys, echo_port: int, transport: str) -> None:
    async with _echo_pair(keys, transport, echo_port) as (server, client):
        payloads = [os.urandom(size) for size in (1, 70_000, 3_000_000)]
        echoed = await asyncio.gather(*(_echo_through(client.socks_address, echo_port, p)
                                        for p in payloads))
        assert echoed == payloads
        assert server.sessions == 1  # all streams shared one tunnel connection


async def test_an_unknown_client_is_refused_and_the_server_keeps_serving(
    keys: Keys, echo_port: int, transport: str
) -> None:
    async with _echo_pair(keys, transport, echo_port, refuse_linger=0.5) as (server, client):
        stranger = client_config(keys, transport, server.address, static=keys.stranger)
        with pytest.raises(TunnelUnavailable):
            await open_session(stranger)
        assert server.refused == 1 and server.sessions == 0
        assert await _echo_through(client.socks_address, echo_port, b"still here") == b"still here"


async def test_garbage_is_closed_without_an_answer(
    keys: Keys, echo_port: int, transport: str
) -> None:
    async with _echo_pair(keys, transport, echo_port, refuse_linger=5) as (server, client):
        host, port = server.address
        reader, writer = await asyncio.open_connection(host, port)
        sent = 0
        try:
            while sent < 2_000_000:  # the server hangs up long before this
                writer.write(os.urandom(20_000))
                await writer.drain()
                sent += 20_000
                await asyncio.sleep(0.01)
        except (ConnectionError, OSError):
            pass
        assert sent < 2_000_000
        assert await _read_until_closed(reader) == b""  # closed, and not one byte in reply
        writer.close()
        assert await _echo_through(client.socks_address, echo_port, b"ok") == b"ok"


async def test_the_tls_server_looks_like_a_web_server_to_strangers(keys: Keys) -> None:
    async with TunnelServer(server_config(keys, "tls", [], cover_sni="cdn.example.net")) as server:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        host, port = server.address
        reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                       server_hostname="cdn.example.net")
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        writer.write(b"GET / HTTP/1.1\r\nHost: cdn.example.net\r\nUser-Agent: curl/8\r\n\r\n")
        response = await _read_until_closed(reader)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(COVER_PAGE)

        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(b"\x00\x05hello")
        assert (await _read_until_closed(reader)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        writer.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_gets_the_cover_page(keys: Keys) -> None:
    async with TunnelServer(server_config(keys, "tls", [])) as server:
        host, port = server.address
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sk", "--max-time", "10", "--resolve", f"www.example.com:{port}:{host}",
            f"https://www.example.com:{port}/", stdout=asyncio.subprocess.PIPE)
        body, _ = await asyncio.wait_for(curl.communicate(), 20)
        assert curl.returncode == 0 and body == COVER_PAGE


async def test_a_replayed_first_message_gets_no_answer(keys: Keys) -> None:
    transport = build_transport("noisesocket-padded")
    async with TunnelServer(server_config(keys, "noisesocket-padded", [],
                                          refuse_linger=0.5)) as server:
        connection = NoiseSocketConnection(
            True, transport.client_settings(keys.client, keys.server.public))
        connection.send_handshake()
        first = connection.data_to_send()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(first)
        assert await asyncio.wait_for(reader.read(65536), TIMEOUT)  # the genuine one: answered
        writer.close()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(first)
        assert await _read_until_closed(reader) == b""  # the replay: silence, then close
        writer.close()
        assert server.refused == 1


async def test_destinations_outside_the_allow_list_are_refused(
    keys: Keys, echo_port: int
) -> None:
    async with _echo_pair(keys, "tls", echo_port) as (_, client):
        for host, port in (("127.0.0.1", echo_port + 1), ("127.0.0.2", echo_port),
                           ("localhost", 22), ("no-such-host.invalid", 80)):
            with pytest.raises(socks5.Socks5Error) as refused:
                await asyncio.wait_for(socks5.open_connection(client.socks_address, host, port),
                                       TIMEOUT)
            assert refused.value.reply in (socks5.Reply.NOT_ALLOWED,
                                           socks5.Reply.HOST_UNREACHABLE), (host, port)
        assert await _echo_through(client.socks_address, echo_port, b"allowed") == b"allowed"


def test_nothing_is_allowed_by_default_and_bad_rules_are_input_errors(keys: Keys) -> None:
    assert TunnelServerConfig(static=keys.server).destination_rules() == []
    assert str(parse_destination("10.0.0.0/8:443")) == "10.0.0.0/8:443"
    assert parse_destination("[::1]:5222").allows(parse_destination("::1").network[0], 5222)
    for bad in ("example.com:80", "10.0.0.1/8", "1.2.3.4:0", "[::1", "1.2.3.4:http"):
        with pytest.raises(TunnelConfigError):
            parse_destination(bad)


async def test_a_stalled_stream_does_not_stall_the_others(keys: Keys, echo_port: int) -> None:
    never_read = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await never_read.wait()
        writer.close()

    sink = await asyncio.start_server(stall, "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    async with sink, tunnel_pair(keys, "tls", [f"127.0.0.1:{echo_port}",
                                               f"127.0.0.1:{sink_port}"]) as (_, client):
        _, stuck = await socks5.open_connection(client.socks_address, "127.0.0.1", sink_port)

        async def flood() -> None:
            while True:
                stuck.write(b"\0" * 65536)
                await stuck.drain()

        flooding = asyncio.create_task(flood())
        await asyncio.sleep(0.5)  # the stalled stream's window and buffers fill up
        assert not flooding.done()
        payload = os.urandom(500_000)
        assert await _echo_through(client.socks_address, echo_port, payload) == payload
        flooding.cancel()
        stuck.close()
        never_read.set()


def _first_packet(keys: Keys, transport_name: str) -> bytes:
    transport = build_transport(transport_name)  # type: ignore[arg-type]
    connection = NoiseSocketConnection(
        True, transport.client_settings(keys.client, keys.server.public))
    connection.send_handshake()
    return connection.data_to_send()


def test_the_padded_first_packet_is_exempt_from_the_fully_encrypted_rule(keys: Keys) -> None:
    for _ in range(50):
        packet = _first_packet(keys, "noisesocket-padded")
        verdict = fully_encrypted.evaluate(packet)
        assert verdict is not None and not verdict.flagged
        printable = sum(0x20 <= byte < 0x7F for byte in packet)
        assert printable * 2 > len(packet)  # Ex3 holds, whatever the rule checks first


async def test_random_first_packets_look_like_random_bytes(keys: Keys) -> None:
    captured: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        captured.append(await reader.read(65536))
        writer.close()

    listener = await asyncio.start_server(capture, "127.0.0.1", 0)
    async with listener:
        config = client_config(keys, "random", listener.sockets[0].getsockname()[:2],
                               connect_timeout=2.0)
        for _ in range(100):
            with pytest.raises(TunnelUnavailable):
                await open_session(config)
    flagged = [fully_encrypted.evaluate(packet) for packet in captured]
    assert len(captured) == 100
    assert sum(v is not None and v.flagged for v in flagged) >= 97
    # Lengths vary (random padding): no fixed first-packet size to fingerprint.
    assert len({len(packet) for packet in captured}) > 50
    pooled = b"".join(captured)
    assert 3.95 < fully_encrypted.popcount_average(pooled) < 4.05


async def test_the_client_reconnects_after_the_tunnel_breaks(keys: Keys, echo_port: int) -> None:
    async with _echo_pair(keys, "random", echo_port) as (server, client):
        assert await _echo_through(client.socks_address, echo_port, b"one") == b"one"
        session = await client.session()
        await session.close()
        assert await _echo_through(client.socks_address, echo_port, b"two") == b"two"
        assert server.sessions == 2


async def test_closing_a_client_ends_its_proxied_connections(keys: Keys, echo_port: int) -> None:
    async with TunnelServer(server_config(keys, "tls", [f"127.0.0.1:{echo_port}"])) as server:
        async with TunnelClient(client_config(keys, "tls", server.address)) as client:
            reader, writer = await socks5.open_connection(client.socks_address, "127.0.0.1",
                                                          echo_port)
        assert await _read_until_closed(reader) == b""
        writer.close()


@pytest.mark.parametrize("transport", ["tls", "random", "noisesocket-padded"])
async def test_closing_a_client_mid_handshake_closes_its_tunnel_connection(
    keys: Keys, transport: str
) -> None:
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)  # a server (or a censor dropping the flow) that never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        client = TunnelClient(client_config(keys, transport, server.sockets[0].getsockname()[:2],
                                            connect_timeout=30.0))
        async with client:
            host, port = client.socks_address
            user = asyncio.create_task(socks5.open_connection(Endpoint(host, port), "127.0.0.1", 9))
            tunnel = await asyncio.wait_for(accepted.get(), 5)
            await asyncio.sleep(0.1)  # the client's first bytes are out; it waits for an answer
        with pytest.raises(ConnectionError):  # the SOCKS client saw its proxy go away
            await asyncio.wait_for(user, 5)
        # The tunnel connection was closed with the client, not left to the garbage
        # collector: its first bytes came, then the end of the stream.
        assert await asyncio.wait_for(tunnel.read(), 5)


async def test_a_failed_noise_handshake_inside_tls_closes_the_connection(keys: Keys) -> None:
    ended = asyncio.Event()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the client's first Noise message
        # A well-framed NoiseSocket reply that does not decrypt.
        writer.write(b"\0\0" + (48).to_bytes(2, "big") + os.urandom(48))
        await writer.drain()
        while await reader.read(65536):
            pass
        ended.set()
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0,
                                        ssl=self_signed_context("www.example.com"))
    async with server:
        config = client_config(keys, "tls", server.sockets[0].getsockname()[:2],
                               connect_timeout=TIMEOUT)
        with pytest.raises(TunnelUnavailable) as failure:
            await open_session(config)
        # Closed by the client, not left to the garbage collector (the error still
        # holds the failed handshake's frames).
        await asyncio.wait_for(ended.wait(), TIMEOUT)
        assert "DecryptError" in str(failure.value)
