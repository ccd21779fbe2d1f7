"""The ``tls`` transport's ClientHello is an ordinary Python client's.

Its client context is built without the system CA store (nothing verifies
against it); the CA store must not show in what the censor sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from noisewall.censor.classify import tls
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.transports.tls import DEFAULT_ALPN, DEFAULT_SNI, TlsTransport

TIMEOUT = 10
MAX_HELLO = 65536

Client = Callable[[tuple[str, int]], Awaitable[object]]


async def _first_hello(client: Client) -> tls.ClientHello:
    """The ClientHello ``client`` sends to a loopback recorder that then hangs up."""
    hello: asyncio.Future[tls.ClientHello] = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while len(data) < MAX_HELLO:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
                parsed = tls.parse(data)
                if isinstance(parsed, tls.ClientHello):
                    hello.set_result(parsed)
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    try:
        address = server.sockets[0].getsockname()[:2]
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            await asyncio.wait_for(client(address), TIMEOUT)
        return await asyncio.wait_for(hello, TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()


async def _tunnel_client(address: tuple[str, int]) -> None:
    connection = await TcpStream.connect(*address)
    try:
        await TlsTransport().wrap_client(connection, b"")
    finally:
        connection.close()


async def _default_python_client(address: tuple[str, int]) -> None:
    context = ssl.create_default_context()
    context.set_alpn_protocols(list(DEFAULT_ALPN))
    _, writer = await asyncio.open_connection(*address, ssl=context,
                                              server_hostname=DEFAULT_SNI)
    writer.close()


async def test_the_tunnel_client_hello_has_the_fingerprint_of_python_default_context() -> None:
    tunnel = await _first_hello(_tunnel_client)
    default = await _first_hello(_default_python_client)
    assert tunnel.sni == default.sni == DEFAULT_SNI
    assert tunnel.alpn_names == list(DEFAULT_ALPN)
    assert tls.ja3_string(tunnel) == tls.ja3_string(default)
    assert tls.ja4(tunnel) == tls.ja4(default)
