"""How flows reach the censor, kept apart from what it does with them.

Each way in is a small module that accepts a client's connection and works
out where it was going: a port route (:mod:`.routes`), a SOCKS5 gateway
(:mod:`.socks`), or a transparent nftables redirect in the border namespace
(:mod:`.transparent`). It hands the censor an :class:`Arrival`; the censor
(:class:`~noisewall.censor.middlebox.Middlebox`) classifies and enforces it
the same way whichever way it came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from noisewall.records.endpoint import Endpoint
from noisewall.serving import ConnectionServer
from noisewall.tcp_stream import TcpStream


class Arrival:
    """A client's connection and the server it was going to.

    The hooks let a way in answer its client once the censor has tried the
    server (SOCKS5 replies); routes and the transparent redirect say nothing.
    """

    def __init__(self, stream: TcpStream, client: Endpoint, target: Endpoint) -> None:
        self.stream = stream
        self.client = client
        self.target = target

    async def connected(self, local: Endpoint) -> None:
        """The censor reached the server from ``local``."""

    async def refused(self) -> None:
        """The censor could not reach the server."""


#: Works out an accepted connection's arrival, or None to drop it (a refused SOCKS5 request).
Accept = Callable[[TcpStream], Awaitable[Arrival | None]]
#: The censor's handler for one arrival; returns when the flow is over.
FlowHandler = Callable[[Arrival], Awaitable[None]]


def peer_of(stream: TcpStream) -> Endpoint:
    """The remote end of an accepted connection."""
    peer = stream.get_extra_info("peername") or ("?", 0)
    return Endpoint(str(peer[0]), int(peer[1]))


class FlowListener(ConnectionServer):
    """Listens on one endpoint and hands each accepted connection's arrival to the censor."""

    def __init__(self, listen: Endpoint, accept: Accept, handle: FlowHandler) -> None:
        super().__init__(listen)
        self._accept = accept
        self._handle = handle
        self._closing = False

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            lambda: TcpStream(self._accepted), self.listen.host, self.listen.port)

    def _accepted(self, stream: TcpStream) -> None:
        if self._closing:
            stream.close()
            return
        self._track(asyncio.get_running_loop().create_task(self._serve(stream)))

    async def _serve(self, stream: TcpStream) -> None:
        arrival = await self._accept(stream)
        if arrival is None:
            stream.close()
            return
        await self._handle(arrival)

    async def close(self) -> None:
        """Stop listening and end every connection's task."""
        self._closing = True
        await super().close()
