"""A TCP listener that runs one task per accepted connection and ends them all on close.

(``asyncio.Server.close`` alone leaves accepted connections running.) The
tunnel server and the tunnel client's SOCKS5 entry both listen this way.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Self

from noisewall.tunnel.tcp_stream import TcpStream


class Listener(ABC):
    """Listens on ``host:port``; each accepted :class:`TcpStream` goes to :meth:`handle`.

    Use ``async with`` (or :meth:`start` and :meth:`close`).
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (once started)."""
        assert self._server is not None, "start it first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> Self:
        """Listen."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: TcpStream(self._accepted), self._host, self._port)
        return self

    async def close(self) -> None:
        """Stop listening and end every connection's task."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None, "start it first"
        await self._server.serve_forever()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abstractmethod
    async def handle(self, connection: TcpStream) -> None:
        """Serve one accepted connection (its task is cancelled on :meth:`close`)."""

    def _accepted(self, connection: TcpStream) -> None:
        # A task per connection, started before the loop reads from it (start_tls needs that).
        task = asyncio.get_running_loop().create_task(self.handle(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
