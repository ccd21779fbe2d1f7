"""A SOCKS5 gateway: the client names the server in a CONNECT request.

Only destinations inside the allowed networks are accepted (loopback by
default): an open relay is a bug.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence

from noisewall import socks5
from noisewall.censor.arrival import Accept, Arrival, peer_of
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream

log = logging.getLogger("noisewall.censor")

#: Loopback only, unless the operator widens it.
DEFAULT_SOCKS_ALLOW = ("127.0.0.0/8", "::1/128")

_REFUSALS = (socks5.Socks5Error, TimeoutError, ConnectionError, asyncio.IncompleteReadError)


class SocksArrival(Arrival):
    """A SOCKS5 client, answered once the censor has tried the server."""

    async def connected(self, local: Endpoint) -> None:
        """Reply success with the censor's own end of the server connection."""
        await self._reply(socks5.reply(socks5.Reply.SUCCEEDED, local.host, local.port))

    async def refused(self) -> None:
        """Reply that the server refused."""
        await self._reply(socks5.reply(socks5.Reply.CONNECTION_REFUSED))

    async def _reply(self, data: bytes) -> None:
        self.stream.write(data)
        await self.stream.drain()


def socks_arrivals(allow: Sequence[str], timeout: float) -> Accept:
    """Accept SOCKS5 clients whose CONNECT destination lies in ``allow`` (CIDRs)."""
    networks = [ipaddress.ip_network(net) for net in allow]

    async def accept(stream: TcpStream) -> Arrival | None:
        try:
            async with asyncio.timeout(timeout):
                target = await _handshake(stream, networks)
        except _REFUSALS as exc:
            log.info("socks: refused %s: %s", stream.get_extra_info("peername"), exc)
            return None
        return SocksArrival(stream, peer_of(stream), target)
    return accept


async def _handshake(stream: TcpStream,
                     networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Endpoint:
    async def write(data: bytes) -> None:
        stream.write(data)
        await stream.drain()

    async def read_some() -> bytes:
        data = await stream.read(512)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        return data

    request, early = await socks5.accept_connect_request(read_some, write)
    stream.unread(early)  # the first flight, if the client did not wait: classified as usual
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            request.host, request.port, type=socket.SOCK_STREAM)
        address = ipaddress.ip_address(infos[0][4][0])
    except (OSError, ValueError, IndexError):
        await write(socks5.reply(socks5.Reply.HOST_UNREACHABLE))
        raise socks5.Socks5Error(f"cannot resolve {request.host}") from None
    if not any(address in network for network in networks):
        await write(socks5.reply(socks5.Reply.NOT_ALLOWED))
        raise socks5.Socks5Error(f"destination {address} is outside the allowed networks")
    return Endpoint(str(address), request.port)
