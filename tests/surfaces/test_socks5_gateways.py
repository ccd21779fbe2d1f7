"""Every SOCKS5 exchange shape against the censor's gateway and the tunnel client's, for real.

Hypothesis writes greetings and CONNECT requests with every field varied (and
cut anywhere, or followed by data, or plain garbage) to a running gateway on
loopback, then half-closes. The gateway must end that connection by itself
within a few seconds, log no traceback, and relay a good CONNECT to an echo
server afterwards.

Destinations stay on this machine: allowed ones are the test's echo server;
any other port goes with an address outside the allowed networks, refused
before a connection is tried; names are ones that need no DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall import socks5
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig
from noisewall.censor.policy import parse_policy
from noisewall.noise.dh import dh_function
from noisewall.records.endpoint import Endpoint
from noisewall.tunnel.client import TunnelClient
from noisewall.tunnel.server import TunnelServer
from tests.surfaces.background import BackgroundLoop, ErrorRecords
from tests.tunnel.conftest import Keys, client_config, server_config

#: How long a gateway may take to end a connection the client half-closed.
END_TIMEOUT = 5.0
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
GOOD = b"still relaying"


@dataclass
class Gateway:
    background: BackgroundLoop
    address: tuple[str, int]
    echo_port: int
    errors: ErrorRecords


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    writer.close()


@contextlib.asynccontextmanager
async def censor_gateway() -> AsyncIterator[tuple[str, int]]:
    policy = parse_policy("rules: []", "p.yaml")
    async with Middlebox(lambda: policy, config=MiddleboxConfig(connect_timeout=2.0)) as box:
        entry = await box.add_socks(Endpoint("127.0.0.1", 0))
        yield entry.host, entry.port


def tunnel_gateway(echo_port: int) -> Callable[[], contextlib.AbstractAsyncContextManager[
        tuple[str, int]]]:
    @contextlib.asynccontextmanager
    async def gateway() -> AsyncIterator[tuple[str, int]]:
        dh = dh_function("25519")
        keys = Keys(dh.generate_keypair(), dh.generate_keypair(), dh.generate_keypair())
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(TunnelServer(server_config(
                keys, "noisesocket-padded", [f"127.0.0.1:{echo_port}"])))
            client = await stack.enter_async_context(TunnelClient(client_config(
                keys, "noisesocket-padded", server.address)))
            yield client.socks_address
    return gateway


@pytest.fixture(scope="module", params=["censor", "tunnel"])
def gateway(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    with BackgroundLoop().running() as background, ErrorRecords().watching(
            "noisewall") as errors:
        echo = background.run(asyncio.start_server(_echo, "127.0.0.1", 0))
        echo_port = int(echo.sockets[0].getsockname()[1])
        opened = censor_gateway() if request.param == "censor" else tunnel_gateway(echo_port)()
        address = background.run(opened.__aenter__())
        try:
            yield Gateway(background, address, echo_port, errors)
        finally:
            background.run(opened.__aexit__(None, None, None))
            echo.close()
            background.run(echo.wait_closed())


async def ended_by_gateway(address: tuple[str, int], data: bytes) -> bool:
    """Send ``data``, half-close, and read: whether the gateway ends it within END_TIMEOUT."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(END_TIMEOUT):
            while await reader.read(65536):
                pass
        return True
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


async def relays(address: tuple[str, int], echo_port: int) -> bytes:
    reader, writer = await asyncio.wait_for(
        socks5.open_connection(Endpoint(*address), "127.0.0.1", echo_port), END_TIMEOUT)
    try:
        writer.write(GOOD)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), END_TIMEOUT)
    finally:
        writer.close()


def check(gateway: Gateway, data: bytes) -> None:
    assert gateway.background.run(ended_by_gateway(gateway.address, data)), data
    assert gateway.background.run(relays(gateway.address, gateway.echo_port)) == GOOD
    assert gateway.errors.take() == []


def byte() -> st.SearchStrategy[int]:
    return st.integers(0, 255)


GREETINGS = st.one_of(
    st.just(b"\x05\x01\x00"),
    st.builds(lambda version, methods: bytes((version, len(methods), *methods)),
              st.sampled_from([5, 4, 0, 255]) | byte(), st.lists(byte(), max_size=8)),
)


def requests(echo_port: int) -> st.SearchStrategy[bytes]:
    """CONNECT requests, each field either right or anything."""
    allowed_port = st.just(echo_port)
    addresses = st.one_of(
        st.tuples(st.just(socks5.ATYP_IPV4), st.sampled_from(
            [b"\x7f\x00\x00\x01"]), allowed_port),
        st.tuples(st.just(socks5.ATYP_IPV4), st.sampled_from(
            [bytes((192, 0, 2, 1)), bytes((0, 0, 0, 0)), bytes((255, 255, 255, 255))]),
            st.integers(0, 65535)),
        st.tuples(st.just(socks5.ATYP_IPV6), st.sampled_from(
            [ipaddress.IPv6Address("::1").packed]), allowed_port),
        st.tuples(st.just(socks5.ATYP_IPV6), st.sampled_from(
            [ipaddress.IPv6Address("2001:db8::1").packed]), st.integers(0, 65535)),
        st.tuples(st.just(socks5.ATYP_DOMAIN), st.sampled_from(
            [b"\x09localhost", b"\x09127.0.0.1", b"\x00", b"\x02\xff\xfe", b"\x03a\x00b",
             b"\xff" + b"a" * 10]), allowed_port | st.integers(0, 65535)),
        st.tuples(byte(), st.binary(max_size=20), st.integers(0, 65535)),
    )
    return st.builds(
        lambda version, command, reserved, address: bytes((version, command, reserved,
                                                           address[0]))
        + address[1] + address[2].to_bytes(2, "big"),
        st.sampled_from([5]) | byte(), st.sampled_from([1]) | byte(), byte(), addresses)


def exchanges(echo_port: int) -> st.SearchStrategy[bytes]:
    whole = st.builds(lambda greeting, request, after: greeting + request + after,
                      GREETINGS, requests(echo_port), st.binary(max_size=40))
    return st.one_of(
        whole,
        st.tuples(whole, st.integers(0, 300)).map(lambda cut: cut[0][:cut[1]]),
        st.binary(max_size=300),
    )


@PROPERTY_SETTINGS
@given(data=st.data())
def test_no_socks5_exchange_breaks_the_gateway(gateway: Gateway, data: st.DataObject) -> None:
    check(gateway, data.draw(exchanges(gateway.echo_port)))


def test_parsers_raise_only_the_typed_error() -> None:
    """The sans-IO parsers behind both gateways: Socks5Error or a result, nothing else."""

    @given(st.binary(max_size=300))
    @settings(max_examples=500, deadline=None)
    def parse(data: bytes) -> None:
        for parser in (socks5.parse_greeting, socks5.parse_request):
            with contextlib.suppress(socks5.Socks5Error):
                parser(data)

    parse()




async def optimistic_echo(address: tuple[str, int], echo_port: int) -> bytes:
    """Greeting, CONNECT and the first data in one write, as a client that does not wait."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(bytes((socks5.VERSION, 1, socks5.METHOD_NO_AUTH))
                     + socks5.connect_request("127.0.0.1", echo_port) + GOOD)
        writer.write_eof()
        async with asyncio.timeout(END_TIMEOUT):
            answer = await reader.read(-1)
    finally:
        writer.close()
    method_reply_length, connect_reply_length = 2, 10  # the reply names an IPv4 address
    return answer[method_reply_length + connect_reply_length:]


def test_data_sent_before_the_connect_reply_reaches_the_destination(gateway: Gateway) -> None:
    assert gateway.background.run(optimistic_echo(gateway.address, gateway.echo_port)) == GOOD
    assert gateway.errors.take() == []


async def test_a_destination_that_speaks_first_is_heard_through_open_connection() -> None:
    """The proxy's reply and the destination's banner in one segment: the banner is kept."""
    banner = b"SSH-2.0-OpenSSH_9.2\r\n"

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        writer.write(bytes((socks5.VERSION, socks5.METHOD_NO_AUTH)))
        await reader.readexactly(len(socks5.connect_request("127.0.0.1", 22)))
        writer.write(socks5.reply(socks5.Reply.SUCCEEDED) + banner)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    try:
        port = int(server.sockets[0].getsockname()[1])
        reader, writer = await asyncio.wait_for(
            socks5.open_connection(Endpoint("127.0.0.1", port), "127.0.0.1", 22), END_TIMEOUT)
        try:
            assert await asyncio.wait_for(reader.readexactly(len(banner)), END_TIMEOUT) == banner
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def connect_reply(address: tuple[str, int], request: bytes) -> int:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(bytes((socks5.VERSION, 1, socks5.METHOD_NO_AUTH)) + request)
        async with asyncio.timeout(END_TIMEOUT):
            answer = await reader.readexactly(2 + 5)
    finally:
        writer.close()
    return answer[3]


def test_a_connect_to_port_zero_is_refused_with_a_reply(gateway: Gateway) -> None:
    code = gateway.background.run(connect_reply(
        gateway.address, socks5.connect_request("2001:db8::1", 0)))
    assert code != socks5.Reply.SUCCEEDED
    assert gateway.errors.take() == []
