"""``tls``: the Noise session inside a real TLS 1.3 session with a cover SNI and ALPN.

The client's ClientHello is the one Python's default ``ssl`` context sends
for any HTTPS request (same cipher suites, extensions, groups: the same
JA3/JA4 as an ordinary Python HTTPS client), with the SNI of a cover site and
the ALPN list of a browser (``h2``, ``http/1.1``). It does not verify the
certificate: the server is authenticated by its Noise key inside, and
the Noise handshake is bound to this TLS session (``tls-unique`` in both
handshake payloads), so after it the mux runs on TLS alone, without a
second AEAD. The
server presents a self-signed certificate for the cover name, picks
``http/1.1`` and to anyone who is not a tunnel client (``curl -k``, a
browser, an active prober) it is a small web server: an HTTP request gets
the cover page, anything else a ``400 Bad Request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl

from noisewall.noise.dh import KeyPair
from noisewall.noise.settings import NoiseSettings
from noisewall.selfsigned import build_self_signed, load_cert_chain
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.channel import ByteStream, client_settings, server_settings
from noisewall.tunnel.tls_stream import TlsStream
from noisewall.tunnel.transports.base import Transport

DEFAULT_SNI = "www.example.com"
DEFAULT_ALPN = ("h2", "http/1.1")
#: A cover site's certificate lives as long as a Let's Encrypt one.
COVER_VALIDITY = datetime.timedelta(days=90)
MAX_REQUEST_HEAD = 16384
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PATCH ")
COVER_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>\n"
    b"<body><h1>Welcome</h1><p>This site is under construction.</p></body></html>\n"
)


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nServer: nginx\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii") + body


def self_signed_context(name: str) -> ssl.SSLContext:
    """A TLS 1.3 server context with a fresh self-signed ECDSA certificate for ``name``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    load_cert_chain(context, build_self_signed(name, dns_names=[name], validity=COVER_VALIDITY))
    return context


def client_context(alpn: tuple[str, ...] = DEFAULT_ALPN) -> ssl.SSLContext:
    """A client context with the ClientHello of Python's default one, without certificate checks.

    ``ssl.create_default_context()`` would parse the whole system CA store
    (~50 ms of CPU) for certificates nobody checks here; the CA store does not
    change the ClientHello (tests pin the JA3 of both as equal).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    return context


async def _socket_of(connection: TcpStream) -> socket.socket:
    """The connection's socket, taken from asyncio for :class:`TlsStream` (TLS not started)."""
    sock, pending, _ = await connection.detach()
    if pending:
        sock.close()
        raise ConnectionError("bytes arrived before the TLS handshake")
    return sock


class TlsTransport(Transport):
    """Noise inside TLS 1.3, looking like HTTPS to a cover site."""

    name = "tls"

    def __init__(self, sni: str = DEFAULT_SNI, alpn: tuple[str, ...] = DEFAULT_ALPN,
                 server_context: ssl.SSLContext | None = None) -> None:
        self.sni = sni
        self._client_context = client_context(alpn)
        self._server_context = server_context

    def client_settings(self, static: KeyPair, server_key: bytes) -> NoiseSettings:
        """IK with the default negotiation data: inside TLS nobody sees it."""
        return client_settings(static, server_key)

    def server_settings(self, static: KeyPair) -> NoiseSettings:
        """IK, matching :meth:`client_settings`."""
        return server_settings(static)

    async def wrap_client(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """TLS handshake with the cover SNI and ALPN."""
        return await TlsStream.handshake(await _socket_of(connection), self._client_context,
                                         server_hostname=self.sni)

    async def wrap_server(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """TLS handshake with the cover certificate (created on first use)."""
        if self._server_context is None:
            self._server_context = self_signed_context(self.sni)
        return await TlsStream.handshake(await _socket_of(connection), self._server_context,
                                         server_side=True)

    def channel_binding(self, stream: ByteStream) -> bytes:
        """The TLS session's ``tls-unique`` value (the client's Finished message).

        The Finished MAC covers the whole TLS 1.3 handshake (both key shares,
        the certificate): a man in the middle holds two sessions with two
        different values, and a recorded handshake replayed on a new session
        carries the old one. Python's ``ssl`` offers no ``tls-exporter``.
        """
        binding = None
        if isinstance(stream, TlsStream):
            binding = stream.get_extra_info("ssl_object").get_channel_binding("tls-unique")
        if not binding:
            raise ConnectionError("the TLS session has no channel binding")
        return bytes(binding)

    async def refuse(self, stream: ByteStream, first_bytes: bytes, linger: float) -> None:
        """A web server's answer: the cover page for HTTP, ``400`` for anything else."""
        head = first_bytes
        # Closed on the way out, also when cancelled: the stream owns its socket.
        with contextlib.suppress(TimeoutError, ConnectionError, OSError), \
                contextlib.closing(stream):
            if head.startswith(_HTTP_METHODS):
                async with asyncio.timeout(linger):
                    while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
                        data = await stream.read(MAX_REQUEST_HEAD)
                        if not data:
                            break
                        head += data
                complete = b"\r\n\r\n" in head
                stream.write(_response("200 OK", COVER_PAGE) if complete
                             else _response("400 Bad Request", b""))
            else:
                stream.write(_response("400 Bad Request", b""))
            await stream.drain()
