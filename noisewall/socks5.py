"""SOCKS5 (RFC 1928) CONNECT: sans-IO parsers for both sides, and a small asyncio client.

Only the no-authentication method and the CONNECT command are offered; who
may connect where is the server's decision (see the censor's and tunnel's
gateways), never this parser's.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

from noisewall.records.endpoint import Endpoint

VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04


class Reply(IntEnum):
    """RFC 1928 reply codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks5Error(ConnectionError):
    """A malformed, unsupported or refused SOCKS5 exchange; ``reply`` is the RFC 1928 code."""

    def __init__(self, message: str, reply: Reply = Reply.GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class ConnectRequest:
    """A CONNECT request: the destination host (IP literal or name) and port."""

    host: str
    port: int


def parse_greeting(data: bytes) -> tuple[list[int], int] | None:
    """The offered methods and the greeting's length, or None if incomplete."""
    if len(data) < 2:
        return None
    if data[0] != VERSION:
        raise Socks5Error(f"not SOCKS5 (version byte {data[0]})")
    count = data[1]
    if count == 0:
        raise Socks5Error("greeting offers no methods")
    if len(data) < 2 + count:
        return None
    return list(data[2 : 2 + count]), 2 + count


def method_reply(methods: list[int]) -> bytes:
    """The server's method selection: no-auth if offered, else none acceptable."""
    return bytes((VERSION, METHOD_NO_AUTH if METHOD_NO_AUTH in methods else METHOD_NONE_ACCEPTABLE))


def parse_request(data: bytes) -> tuple[ConnectRequest, int] | None:
    """The CONNECT request and its length, or None if incomplete."""
    if len(data) < 5:
        return None
    if data[0] != VERSION:
        raise Socks5Error(f"not SOCKS5 (version byte {data[0]})")
    if data[1] != CMD_CONNECT:
        raise Socks5Error(f"command {data[1]} not supported", Reply.COMMAND_NOT_SUPPORTED)
    atyp = data[3]
    if atyp == ATYP_IPV4:
        end = 4 + 4
        host = str(ipaddress.IPv4Address(data[4:end])) if len(data) >= end else ""
    elif atyp == ATYP_IPV6:
        end = 4 + 16
        host = str(ipaddress.IPv6Address(data[4:end])) if len(data) >= end else ""
    elif atyp == ATYP_DOMAIN:
        end = 5 + data[4]
        try:
            host = data[5:end].decode("ascii") if len(data) >= end else ""
        except UnicodeDecodeError:
            raise Socks5Error("domain name is not ASCII") from None
        if len(data) >= end and not host:
            raise Socks5Error("empty domain name")
    else:
        raise Socks5Error(f"address type {atyp} not supported", Reply.ADDRESS_TYPE_NOT_SUPPORTED)
    if len(data) < end + 2:
        return None
    return ConnectRequest(host, int.from_bytes(data[end : end + 2], "big")), end + 2


def reply(code: Reply, host: str = "0.0.0.0", port: int = 0) -> bytes:  # noqa: S104 - RFC's unspecified address
    """A reply to a CONNECT request with the bound address."""
    address = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return bytes((VERSION, code, 0, atyp)) + address.packed + port.to_bytes(2, "big")


async def accept_connect_request(
    read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]]
) -> tuple[ConnectRequest, bytes]:
    """The server side of the handshake over any transport: greet, agree on no
    authentication, and return the client's CONNECT request.

    ``read`` returns the next bytes (and raises at end of stream), ``write``
    sends and drains. A client that offers no acceptable method, or sends a
    bad request, gets its RFC 1928 answer and :class:`Socks5Error` is raised.
    Also returned: the bytes that came after the request (a client that sends
    its first data without waiting for our reply); they belong to the
    connection and must reach the destination first.
    """
    buffer = b""
    while (greeting := parse_greeting(buffer)) is None:
        buffer += await read()
    methods, used = greeting
    await write(method_reply(methods))
    if METHOD_NO_AUTH not in methods:
        raise Socks5Error("client offers no acceptable method")
    buffer = buffer[used:]
    while True:
        try:
            parsed = parse_request(buffer)
        except Socks5Error as exc:
            await write(reply(exc.reply))
            raise
        if parsed is not None:
            request, used = parsed
            return request, buffer[used:]
        buffer += await read()


def connect_request(host: str, port: int) -> bytes:
    """A client's CONNECT request for ``host:port`` (IP literal or domain name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise Socks5Error(f"bad host name {host!r}") from None
        target = bytes((ATYP_DOMAIN, len(name))) + name
    else:
        target = bytes((ATYP_IPV4 if address.version == 4 else ATYP_IPV6,)) + address.packed
    return bytes((VERSION, CMD_CONNECT, 0)) + target + port.to_bytes(2, "big")


def reply_length(head: bytes) -> int:
    """The whole length of a reply from its first five bytes."""
    if head[0] != VERSION:
        raise Socks5Error(f"not a SOCKS5 reply (version byte {head[0]})")
    atyp = head[3]
    if atyp == ATYP_IPV4:
        return 4 + 4 + 2
    if atyp == ATYP_IPV6:
        return 4 + 16 + 2
    if atyp == ATYP_DOMAIN:
        return 5 + head[4] + 2
    raise Socks5Error(f"reply with unknown address type {atyp}")


def parse_reply(data: bytes) -> tuple[Reply, int] | None:
    """The server's reply code and the reply's length, or None if incomplete."""
    if len(data) < 5:
        return None
    length = reply_length(data)
    if len(data) < length:
        return None
    try:
        code = Reply(data[1])
    except ValueError:
        code = Reply.GENERAL_FAILURE
    return code, length


async def open_connection(
    proxy: Endpoint, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP stream to ``host:port`` through the SOCKS5 proxy (no authentication).

    Raises :class:`Socks5Error` when the proxy refuses; the caller bounds the time.
    """
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(bytes((VERSION, 1, METHOD_NO_AUTH)))
        if await reader.readexactly(2) != bytes((VERSION, METHOD_NO_AUTH)):
            raise Socks5Error("the proxy wants an authentication method we do not offer")
        writer.write(connect_request(host, port))
        # Exactly the reply, never more: what follows it is the destination's first
        # bytes (a server that speaks first), which stay in the reader for the caller.
        buffer = await reader.readexactly(5)
        while (parsed := parse_reply(buffer)) is None:
            buffer += await reader.readexactly(reply_length(buffer) - len(buffer))
        code, _ = parsed
        if code != Reply.SUCCEEDED:
            raise Socks5Error(f"the proxy refused: {code.name.lower()}", code)
    except asyncio.IncompleteReadError:
        writer.close()
        raise Socks5Error("the proxy closed the connection") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer
