"""A TCP listener that runs one task per accepted connection and ends them all on close.

The tunnel server and the tunnel client's SOCKS5 entry both listen this way.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from noisewall.serving import ConnectionServer
from noisewall.tcp_stream import TcpStream


class Listener(ConnectionServer, ABC):
    """Listens on ``listen``; each accepted :class:`TcpStream` goes to :meth:`handle`.

    Use ``async with`` (see :class:`~noisewall.service.Service`).
    """

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            lambda: TcpStream(self._accepted), self.listen.host, self.listen.port)

    @abstractmethod
    async def handle(self, connection: TcpStream) -> None:
        """Serve one accepted connection (its task is cancelled on :meth:`close`)."""

    def _accepted(self, connection: TcpStream) -> None:
        # A task per connection, started before the loop reads from it (the tls transport
        # takes the socket from asyncio for its own TLS before any byte is read).
        self._track(asyncio.get_running_loop().create_task(self.handle(connection)))
