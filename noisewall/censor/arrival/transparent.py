"""The transparent way in: flows redirected to the censor by nftables, in the path.

In the border namespace an nftables ``nat`` rule redirects every forwarded
TCP flow to the censor's listener; the kernel remembers where the flow was
going, and ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` reads it back. The client
never knows: it connected to the server's own address. (This kernel has no
TPROXY, so the censor reaches the server from its own address.)
"""

from __future__ import annotations

import socket
import struct

from noisewall.censor.arrival import Accept, Arrival, peer_of
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream

#: From linux/netfilter_ipv4.h (Python's socket module does not name it).
SO_ORIGINAL_DST = 80
_SOCKADDR_IN = struct.Struct("!2xH4s8x")


def original_destination(sock: socket.socket) -> Endpoint:
    """Where a redirected IPv4 TCP connection was going, before nftables turned it to us."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    port, address = _SOCKADDR_IN.unpack(raw)
    return Endpoint(socket.inet_ntoa(address), port)


def transparent_arrivals() -> Accept:
    """Accept redirected connections: each goes to its original destination."""
    async def accept(stream: TcpStream) -> Arrival | None:
        sock = stream.get_extra_info("socket")
        try:
            target = original_destination(sock)
        except OSError:
            return None  # a connection made to the listener itself: nowhere to relay it
        return Arrival(stream, peer_of(stream), target)
    return accept
