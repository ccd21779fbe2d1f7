"""A listening server that also owns the tasks serving its connections.

``asyncio.Server.close`` alone leaves accepted connections running; a
:class:`ConnectionServer` cancels them and waits for them on :meth:`close`.
The Noise listener, the tunnel's listeners and the censor's ways in build on it.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import Self

from noisewall.records.endpoint import Endpoint
from noisewall.service import Service


class ConnectionServer(Service):
    """An :class:`asyncio.Server` on ``listen`` and one task per live connection."""

    def __init__(self, listen: Endpoint) -> None:
        self.listen = listen
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """How many connections are being served right now."""
        return len(self._tasks)

    @property
    def address(self) -> Endpoint:
        """The bound host and port (once started)."""
        assert self._server is not None, "start it first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return Endpoint(str(host), int(port))

    @abstractmethod
    async def _listen(self) -> asyncio.Server:
        """Create the listening server on :attr:`listen`."""

    async def start(self) -> Self:
        """Listen on :attr:`listen`."""
        self._server = await self._listen()
        return self

    def _track(self, task: asyncio.Task[None]) -> None:
        """Serve a connection in ``task``: cancelled on :meth:`close`, forgotten when done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening and end every connection's task."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
