"""A TCP listener that runs one task per accepted connection and ends them all on close.

The tunnel server and the tunnel client's SOCKS5 entry both listen this way.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Self

from noisewall.serving import ConnectionServer
from noisewall.tcp_stream import TcpStream


class Listener(ConnectionServer, ABC):
    """Listens on ``host:port``; each accepted :class:`TcpStream` goes to :meth:`handle`.

    Use ``async with`` (or :meth:`start` and :meth:`close`).
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._host = host
        self._port = port

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (once started)."""
        host, port = self._listening().sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> Self:
        """Listen."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: TcpStream(self._accepted), self._host, self._port)
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abstractmethod
    async def handle(self, connection: TcpStream) -> None:
        """Serve one accepted connection (its task is cancelled on :meth:`close`)."""

    def _accepted(self, connection: TcpStream) -> None:
        # A task per connection, started before the loop reads from it (the tls transport
        # takes the socket from asyncio for its own TLS before any byte is read).
        self._track(asyncio.get_running_loop().create_task(self.handle(connection)))
